"""CTF writer and reader: round trips, every grammar rule, malformed input, and CNTK's own corpus.

The corpus (../shared/data/cntk) holds CNTK's CTF reader unit-test inputs, the reader configs that
declare their streams, and the baselines CNTK printed (samples densified, minibatch by minibatch).
"""
from __future__ import annotations

import bisect
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import require_dataset
from gearsight.cntk.ctf import (CTFError, CTFReader, SparseBatch, StreamSpec, ctf_to_images, infer_streams,
                                iter_ctf_samples, read_ctf_images, write_ctf)

AB = {"a": StreamSpec(3), "b": StreamSpec(5, "sparse")}


def ctf(tmp_path: Path, text: str | bytes, name: str = "t.ctf") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def read(tmp_path: Path, text: str | bytes, streams=AB, **kw):
    reader = CTFReader(ctf(tmp_path, text), streams, **kw)
    return reader.read_all(), reader


# -- writer <-> reader round trips ------------------------------------------------------------------

@pytest.mark.parametrize("sparse_labels", [False, True])
def test_image_round_trip_is_exact(tmp_path, sparse_labels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 8, 6, 3), dtype=np.uint8)
    images[0] = 0  # one-digit values everywhere
    images[1] = 255
    labels = rng.integers(0, 7, 300)
    path = tmp_path / "img.ctf"
    assert write_ctf(path, images, labels, 7, sparse_labels=sparse_labels) == 300
    labels_spec = StreamSpec(7, "sparse" if sparse_labels else "dense")
    batch = CTFReader(path, {"features": StreamSpec(144), "labels": labels_spec}, chunk_bytes=20_000).read_all()
    np.testing.assert_array_equal(ctf_to_images(batch["features"], (8, 6, 3)), images)
    np.testing.assert_array_equal(batch.dense("labels").argmax(1), labels)
    got = list(iter_ctf_samples(path, (8, 6, 3), batch_size=128))
    assert [len(x) for x, _ in got] == [128, 128, 44]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), labels)
    all_images, all_labels = read_ctf_images(path, (8, 6, 3))
    np.testing.assert_array_equal(all_images, images)
    np.testing.assert_array_equal(all_labels, labels)


def test_written_line_is_cntk_cifar_format_in_chw_order(tmp_path):
    image = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)  # HWC: pixel (0,0) = 0 1 2
    write_ctf(tmp_path / "one.ctf", image, np.array([2]), 4)
    assert (tmp_path / "one.ctf").read_bytes() == b"|labels 0 0 1 0 |features 0 3 6 9 1 4 7 10 2 5 8 11\n"
    write_ctf(tmp_path / "hwc.ctf", image, np.array([3]), 4, sparse_labels=True, layout="HWC",
              label_stream="y", feature_stream="x")
    assert (tmp_path / "hwc.ctf").read_bytes() == b"|y 3:1 |x 0 1 2 3 4 5 6 7 8 9 10 11\n"
    back = CTFReader(tmp_path / "hwc.ctf", {"x": StreamSpec(12), "y": StreamSpec(4, "sparse")}).read_all()
    np.testing.assert_array_equal(ctf_to_images(back["x"], (2, 2, 3), layout="HWC"), image)


@pytest.mark.parametrize("dtype, sparse_labels", [(np.float32, False), (np.float64, True), (np.int16, False)])
def test_feature_vectors_round_trip(tmp_path, dtype, sparse_labels):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((50, 7)) * 1e3).astype(dtype)
    write_ctf(tmp_path / "v.ctf", x, np.arange(50) % 3, 3, sparse_labels=sparse_labels)
    read_dtype = np.float64 if dtype == np.float64 else np.float32
    streams = {"features": StreamSpec(7), "labels": StreamSpec(3, "sparse" if sparse_labels else "dense")}
    batch = CTFReader(tmp_path / "v.ctf", streams, dtype=read_dtype).read_all()
    np.testing.assert_array_equal(batch["features"], x.astype(read_dtype))
    np.testing.assert_array_equal(batch.dense("labels").argmax(1), np.arange(50) % 3)
    assert batch["features"].dtype == read_dtype


@pytest.mark.parametrize("high", [10, 256, 10_000, 10 ** 12])  # 1..4 digits: uint16 route, more: int64
def test_vectorised_and_line_parsers_agree(tmp_path, high):
    rng = np.random.default_rng(2)
    x = rng.integers(0, high, (200, 33))
    x[:, 0] = high - 1
    lines = [f"|y {i % 4}:1 {i % 3 + 4}:{i} |x {' '.join(map(str, row))}\r\n" for i, row in enumerate(x)]
    path = ctf(tmp_path, "".join(lines))
    streams = {"x": StreamSpec(33), "y": StreamSpec(8, "sparse")}
    fast_reader = CTFReader(path, streams, dtype=np.float64, chunk_bytes=2048)
    fast = fast_reader.read_all()
    assert fast_reader.chunk_stats["line_by_line"] == 0 and fast_reader.chunk_stats["vectorized"] > 3
    slow = CTFReader(path, streams, dtype=np.float64, vectorized=False).read_all()
    np.testing.assert_array_equal(fast["x"], x.astype(np.float64))
    np.testing.assert_array_equal(fast["x"], slow["x"])
    np.testing.assert_array_equal(fast.dense("y"), slow.dense("y"))
    np.testing.assert_array_equal(fast.lines, slow.lines)
    np.testing.assert_array_equal(fast.sequence_ids, np.arange(200))


def test_streaming_small_chunks_equals_reading_all(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (97, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "s.ctf"
    write_ctf(path, images, rng.integers(0, 5, 97), 5)
    streams = {"features": StreamSpec(48), "labels": StreamSpec(5)}
    whole = CTFReader(path, streams).read_all()
    reader = CTFReader(path, streams, chunk_bytes=100)  # smaller than one line
    batches = list(reader.minibatches(10))
    assert [len(b) for b in batches] == [10] * 9 + [7]
    for name in streams:
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), whole[name])
    assert len(list(reader.minibatches(10, drop_last=True))) == 9


@pytest.mark.parametrize("vectorized", [True, False])
def test_memory_does_not_grow_with_the_file(tmp_path, vectorized):
    import tracemalloc  # numpy reports its buffers to tracemalloc
    peaks = []
    for lines in (2000, 8000):
        path = tmp_path / f"{lines}.ctf"
        write_ctf(path, np.random.default_rng(0).integers(0, 256, (lines, 100), dtype=np.uint8),
                  np.zeros(lines, int), 10)
        reader = CTFReader(path, {"features": StreamSpec(100), "labels": StreamSpec(10)},
                           chunk_bytes=64 << 10, vectorized=vectorized)
        tracemalloc.start()
        try:
            assert sum(len(b) for b in reader.minibatches(64)) == lines
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0] and peaks[1] < path.stat().st_size / 2


def test_sequences_spanning_chunks(tmp_path):
    lines = [f"{s} |a {s} {t} 0{' |b 0:1' if t == 0 else ''}\n" for s in range(30) for t in range(s % 4 + 1)]
    path = ctf(tmp_path, "".join(lines))
    whole = CTFReader(path, AB).read_all()
    batches = list(CTFReader(path, AB, chunk_bytes=37).minibatches(7))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate([b["a"] for b in batches]), whole["a"])
    np.testing.assert_array_equal(whole.lengths["a"], [s % 4 + 1 for s in range(30)])
    np.testing.assert_array_equal(whole.lengths["b"], np.ones(30))
    np.testing.assert_array_equal(whole["a"][:, :2], [[s, t] for s in range(30) for t in range(s % 4 + 1)])


# -- grammar rules ----------------------------------------------------------------------------------

def test_sequence_ids_group_consecutive_lines(tmp_path):
    batch, _ = read(tmp_path, "100 |a 1 2 3 |b 0:1\n100 |a 4 5 6\n|a 7 8 9\n200 |b 2:5 |a 0 0 1\n")
    np.testing.assert_array_equal(batch.sequence_ids, [100, 200])
    np.testing.assert_array_equal(batch.lines, [1, 4])
    np.testing.assert_array_equal(batch.lengths["a"], [3, 1])  # the id-less line continues sequence 100
    np.testing.assert_array_equal(batch["a"], [[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 1]])
    np.testing.assert_array_equal(batch.dense("b"), [[1, 0, 0, 0, 0], [0, 0, 5, 0, 0]])


def test_ids_ignored_when_first_line_has_none_or_when_asked(tmp_path):
    text = "|a 1 2 3 |b 0:1\n100 |a 4 5 6 |b 1:1\n100 |a 7 8 9 |b 2:1\n"
    batch, _ = read(tmp_path, text)
    np.testing.assert_array_equal(batch.sequence_ids, [0, 1, 2])  # CNTK: line index
    batch, _ = read(tmp_path, text[text.index("100"):], skip_sequence_ids=True)
    assert len(batch) == 2


def test_named_streams_any_order_and_aliases(tmp_path):
    streams = {"features": StreamSpec(3, alias="a"), "labels": StreamSpec(5, "sparse", alias="b")}
    batch, _ = read(tmp_path, "|b 4:1 |a 1 2 3\n|a 4 5 6 |b 0:2\n", streams)
    assert set(batch.keys()) == {"features", "labels"}
    np.testing.assert_array_equal(batch["features"], [[1, 2, 3], [4, 5, 6]])
    sparse = batch["labels"]
    assert isinstance(sparse, SparseBatch) and sparse.shape == (2, 5)
    np.testing.assert_array_equal(sparse.rows, [0, 1])
    np.testing.assert_array_equal(sparse.cols, [4, 0])
    np.testing.assert_array_equal(sparse.values, [1, 2])


def test_comments_tabs_crlf_and_tight_bars(tmp_path):
    text = ("|# a comment |a 1 2 3 |# a comment with an escaped pipe: '|#' then more |b 1:1\r\n"
            "|a\t4\t5  6|b 2:1|# tail with numbers 7 8 9\n"
            "|####\t|a 7 8 9|####|b 3:1\n")
    batch, reader = read(tmp_path, text)
    np.testing.assert_array_equal(batch["a"], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(batch["b"].cols, [1, 2, 3])
    assert reader.skipped_count == reader.warning_count == 0


def test_number_syntax_is_cntks(tmp_path):
    batch, _ = read(tmp_path, "|a 1e5 -2.5E-3 +1.5e+2 |b 0:20. 1:02.0 4:-6.4265e+020\n")
    np.testing.assert_allclose(batch["a"], [[1e5, -2.5e-3, 150]])
    np.testing.assert_allclose(batch.dense("b"), [[20, 2, 0, 0, -6.4265e20]], rtol=1e-6)
    for bad in [".5", "-.5", "1.e5", "inf", "nan", "2.0f", "1_0", "0x1", "1e", "1.5.5", "+-1", "2,0", "2:0"]:
        with pytest.raises(CTFError, match=rf"t\.ctf:1: stream 'a': '{re.escape(bad)}' is not a number"):
            read(tmp_path, f"|a 1 {bad} 2 |b\n")


def test_empty_streams(tmp_path):
    batch, reader = read(tmp_path, "|a 1 2 3 |b\n|a |b 1:1\n|b 2:1 |a 4\n")
    assert batch["b"].values.size == 2 and batch["b"].shape == (3, 5)  # empty sparse sample: fine
    np.testing.assert_array_equal(batch["a"], [[1, 2, 3], [0, 0, 0], [4, 0, 0]])  # short dense: padded
    assert [(w.line, w.reason) for w in reader.warnings] == [
        (2, "stream 'a' has 0 values, fewer than its dim 3 (zero-padded, as CNTK does)"),
        (3, "stream 'a' has 1 values, fewer than its dim 3 (zero-padded, as CNTK does)")]
    with pytest.raises(CTFError, match=r":2: stream 'a' has 0 values, fewer than its dim 3$"):
        read(tmp_path, "|a 1 2 3 |b\n|a |b 1:1\n", short_dense="error")


def test_bom_missing_newline_and_unknown_streams_ignored(tmp_path):
    batch, reader = read(tmp_path, b"\xef\xbb\xbf|a 1 2 3 |c 9 |b 0:1\n|a 4 5 6 |b 1:1", unknown_streams="ignore")
    np.testing.assert_array_equal(batch["a"], [[1, 2, 3], [4, 5, 6]])
    assert [(w.line, w.reason) for w in reader.warnings] == [(2, "the last line has no trailing newline")]


def test_streams_inferred_from_the_file(tmp_path):
    path = ctf(tmp_path, "0 |x 1 2 |y 3:1 |# c\n0 |x 3 4\n1 |x 5 6 7 |y 0:1 9:2\n")
    assert infer_streams(path) == {"x": StreamSpec(3), "y": StreamSpec(10, "sparse")}
    batch = CTFReader(path).read_all()
    np.testing.assert_array_equal(batch["x"], [[1, 2, 0], [3, 4, 0], [5, 6, 7]])
    partial = CTFReader(path, {"x": StreamSpec(4), "y": StreamSpec(None, "sparse")})
    assert partial.streams["y"] == StreamSpec(10, "sparse")
    with pytest.raises(ValueError, match="declared dense but its values are sparse"):
        CTFReader(path, {"y": StreamSpec()})


# -- malformed input: an error naming the file, the line and the reason -----------------------------

GOOD = "|a 1 2 3 |b 0:1\n"


@pytest.mark.parametrize("bad_line, reason", [
    ("|a 1 2,0 3 |b 0:1", "stream 'a': '2,0' is not a number"),
    ("|a 1 2 3 |c 1 |b 0:1", "unknown stream 'c' (declared: a, b)"),
    ("|a 1 2 3 |b 5:1", "stream 'b': sparse index 5 out of range for dim 5"),
    ("|a 1 2 3 4 |b 0:1", "stream 'a' has 4 values, more than its dim 3"),
    ("|a 1 2 3 |b 2", "stream 'b': '2' is not an index:value pair"),
    ("|a 1 2 3 |b 2::2", "stream 'b': '2::2' is not an index:value pair"),
    ("|a 1 2 3 |b -2:2", "stream 'b': '-2:2' is not an index:value pair"),
    ("a 1 2 3 |b 0:1", "expected '|' before 'a 1 2 3'"),
    ("| a 1 2 3 |b 0:1", "'|' must be followed by a stream name, found ' '"),
    ("|a 1 2 3 |b 0:1 |", "'|' must be followed by a stream name, found end of line"),
    ("|a 1 2 3 |b 0:1 |a 4 5 6", "stream 'a' appears twice on the line"),
    ("", "empty line"),
    ("|# only a comment", "no samples on the line (only comments)"),
    ("|a 1 2 3", "stream 'b' has no sample in sequence 1"),
    ("|a 1 2\x0b3 |b 0:1", r"stream 'a': '2\x0b3' is not a number"),
    ("|a\x01 1 2 3 |b 0:1", r"unexpected control character in stream name 'a\x01'"),
])
def test_malformed_line_raises_naming_the_line(tmp_path, bad_line, reason):
    path = ctf(tmp_path, GOOD + bad_line + "\n" + GOOD)
    for vectorized in (True, False):
        with pytest.raises(CTFError) as err:
            CTFReader(path, AB, vectorized=vectorized).read_all()
        assert (err.value.path, err.value.line, err.value.reason) == (str(path), 2, reason)
        assert str(err.value) == f"{path}:2: {reason}"


def test_sequence_id_overflow(tmp_path):
    with pytest.raises(CTFError, match=r":2: sequence id '99999999999999999999' is too large"):
        read(tmp_path, "1 |a 1 2 3 |b 0:1\n99999999999999999999 |a 1 2 3 |b 0:1\n")


def test_sequence_rules_name_the_line_range(tmp_path):
    text = "1 |a 1 2 3 |b 0:1\n7 |a 1 2 3\n7 |b 1:1\n8 |a 1 1 1 |b 0:1\n"
    with pytest.raises(CTFError, match=r"t\.ctf:2-3: sequence 7 spans 2 lines but its longest stream has 1 samples"):
        read(tmp_path, text)
    with pytest.raises(CTFError, match=r"t\.ctf:2-3: stream 'a' has no sample in sequence 7"):
        read(tmp_path, "1 |a 1 2 3 |b 0:1\n7 |b 0:1\n7 |b 1:1\n")


@pytest.mark.parametrize("data, reason", [
    (b"", "the file is empty"),
    (b"\xff\xfe|\x00a\x00", "UTF-16 text is not supported"),
    (b" |a 1 2 3 |b 0:1\n", "a line must start with a sequence id or '|'"),
])
def test_unreadable_files(tmp_path, data, reason):
    with pytest.raises(CTFError, match=re.escape(reason)):
        read(tmp_path, data)


def test_skip_mode_counts_and_reports_lines(tmp_path):
    text = GOOD + "|a 1 x 3 |b 0:1\n" + GOOD + "\n|a 1 2 3 |b 9:1\n" + GOOD
    batch, reader = read(tmp_path, text, on_error="skip")
    assert len(batch) == 3
    np.testing.assert_array_equal(batch.lines, [1, 3, 6])
    assert reader.skipped_count == 3
    assert [(i.line, i.reason) for i in reader.skipped] == [
        (2, "stream 'a': 'x' is not a number"), (4, "empty line"),
        (5, "stream 'b': sparse index 9 out of range for dim 5")]
    with pytest.raises(CTFError, match=r":5: .*more than max_errors=2 malformed lines"):
        read(tmp_path, text, on_error="skip", max_errors=2)
    # a skipped line in a sequence leaves the rest of the sequence intact
    batch, reader = read(tmp_path, "4 |a 1 2 3 |b 0:1\n4 |a 4 5\x016\n4 |a 7 8 9\n", on_error="skip")
    np.testing.assert_array_equal(batch["a"], [[1, 2, 3], [7, 8, 9]])
    assert [i.line for i in reader.skipped] == [2]


# -- image-classification view --------------------------------------------------------------------

@pytest.mark.parametrize("bad_pixel", ["3.5", "256", "-1"])
def test_iter_ctf_samples_rejects_non_pixels(tmp_path, bad_pixel):
    path = ctf(tmp_path, f"|labels 0 1 |features 1 2 3 4\n|labels 1 0 |features 1 2 {bad_pixel} 4\n")
    with pytest.raises(CTFError, match=r":2: stream 'features' holds a value that is not an integer pixel"):
        list(iter_ctf_samples(path, (2, 2, 1)))


@pytest.mark.parametrize("labels", ["1 1", "0 0", "0 2", "1:1 0:1", "1:2", "1:1 1:1"])
def test_iter_ctf_samples_rejects_non_one_hot_labels(tmp_path, labels):
    good = "0:1" if ":" in labels else "0 1"
    path = ctf(tmp_path, f"|labels {good} |features 1 2 3 4\n|labels {labels} |features 1 2 3 4\n")
    with pytest.raises(CTFError, match=r":2: stream 'labels' is not a one-hot label"):
        list(iter_ctf_samples(path, (2, 2, 1), num_classes=2))


def test_iter_ctf_samples_window_shuffle(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (100, 2, 2, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(100)  # tag each image with its label
    path = tmp_path / "sh.ctf"
    write_ctf(path, images, np.arange(100), 100, sparse_labels=True)
    got = list(iter_ctf_samples(path, (2, 2, 3), batch_size=16, shuffle_buffer=40, seed=1, num_classes=100))
    x, y = np.concatenate([b[0] for b in got]), np.concatenate([b[1] for b in got])
    assert sorted(y.tolist()) == list(range(100)) and not np.array_equal(y, np.arange(100))
    np.testing.assert_array_equal(x[:, 0, 0, 0], y)  # images stay with their labels
    again = np.concatenate([b[1] for b in iter_ctf_samples(path, (2, 2, 3), batch_size=16, shuffle_buffer=40,
                                                           seed=1, num_classes=100)])
    np.testing.assert_array_equal(again, y)
    assert all(len(b[0]) == 16 for b in iter_ctf_samples(path, (2, 2, 3), batch_size=16, shuffle_buffer=40,
                                                         drop_last=True, num_classes=100))


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="label 5 of sample 1 is not in"):
        write_ctf(tmp_path / "w.ctf", np.zeros((2, 3), np.uint8), np.array([0, 5]), 5)
    with pytest.raises(ValueError, match="sample 1 has a NaN"):
        write_ctf(tmp_path / "w.ctf", np.array([[0.5], [np.nan]]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="stream name 'my labels'"):
        write_ctf(tmp_path / "w.ctf", np.zeros((1, 3), np.uint8), np.array([0]), 2, label_stream="my labels")


# -- CNTK's corpus ------------------------------------------------------------------------------------

def _braced(text: str, open_at: int) -> str:
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1:i]
    raise ValueError("unbalanced brackets")


def cntk_reader_config(config: Path, section: str) -> tuple[dict[str, StreamSpec], dict[str, str]]:
    """Streams and reader options of one test section of a CNTK (BrainScript) reader config."""
    text = re.sub(r"#[^\n]*", "", config.read_text())
    body = _braced(text, re.search(rf"(?m)^{re.escape(section)}\s*=\s*\[", text).end() - 1)
    input_at = re.search(r"\binput\s*=\s*\[", body)
    inputs = _braced(body, input_at.end() - 1)
    streams, at = {}, 0
    while m := re.compile(r"(\w+)\s*=\s*\[").search(inputs, at):
        keys = dict(re.findall(r'(\w+)\s*=\s*"?([\w.$]+)"?', inner := _braced(inputs, m.end() - 1)))
        streams[m.group(1)] = StreamSpec(int(keys["dim"]), keys["format"], keys.get("alias"))
        at = m.end() + len(inner)
    options = dict(re.findall(r'(\w+)\s*=\s*"?([\w.$]+)"?', body[:input_at.start()]))
    return streams, options


def corpus_reader(section: str, config: str, **kw) -> CTFReader:
    unit = require_dataset("cntk") / "ctf" / "unit"
    streams, options = cntk_reader_config(unit / "config" / config, section)
    kw.setdefault("dtype", np.float64 if options.get("precision") == "double" else np.float32)
    kw.setdefault("skip_sequence_ids", options.get("skipSequenceIds") == "true")
    if "maxErrors" in options:
        kw.update(on_error="skip", max_errors=int(options["maxErrors"]))
    return CTFReader(unit / "data" / options["file"], streams, **kw)


def baseline(name: str) -> np.ndarray:
    """A CNTK control file as one flat array of numbers (CNTK compares them token by token)."""
    return np.array((require_dataset("cntk") / "ctf/unit/control" / name).read_text().split(), np.float64)


def stream_order(batch) -> list[str]:
    return sorted(batch.keys(), key=lambda s: (not s.startswith("features"), s))  # CNTK's test harness order


@pytest.mark.parametrize("config, section, control, plan", [
    ("dense.cntk", "Simple", "Simple_dense.txt", (1000, 250, 10)),
    ("dense.cntk", "Simple_single_stream", "Simple_dense_single_stream.txt", (1000, 250, 10)),
    ("dense.cntk", "10x1_MI", "10x1_MI_2_dense.txt", (7, 3, 3)),
    ("dense.cntk", "100x1", "100x1_1_dense.txt", (10, 1, 10)),
    ("dense.cntk", "100x1", "100x1_2_dense.txt", (5, 3, 4)),
])
def test_cntk_baseline_frames_in_order(config, section, control, plan):
    """One-sample sequences read in order: replay CNTK's minibatch loop (epoch size, minibatch size,
    epochs, at most 10 minibatches an epoch) and compare every printed value in order."""
    # Simple_single_stream declares only 'features'; CNTK skips the undeclared 'L' (traceLevel 0)
    batch = corpus_reader(section, config, unknown_streams="ignore").read_all()
    epoch_size, mb_size, epochs = plan
    expected = []
    for epoch in range(epochs):
        start, end = epoch * epoch_size, (epoch + 1) * epoch_size
        for _ in range(10):
            if start >= end:
                break
            rows = np.arange(start, min(start + mb_size, end)) % len(batch)
            expected += [batch[name][rows].ravel() for name in stream_order(batch)]
            start += mb_size
    np.testing.assert_allclose(np.concatenate(expected), baseline(control), rtol=1e-5)


@pytest.mark.parametrize("config, section, control", [
    ("dense.cntk", "1x1", "1x1_1_dense.txt"),
    ("dense.cntk", "1x10", "1x10_dense.txt"),
    ("dense.cntk", "10x10", "10x10_dense.txt"),
    ("dense.cntk", "50x20_jagged_sequences", "50x20_jagged_sequences_dense.txt"),
    ("sparse.cntk", "1x1", "1x1_sparse.txt"),
    ("sparse.cntk", "1x2", "1x2_sparse.txt"),
    ("sparse.cntk", "1x10", "1x10_sparse.txt"),
    ("sparse.cntk", "10x10", "10x10_sparse.txt"),
    ("sparse.cntk", "3x5_MI", "3x5_MI_sparse.txt"),
    ("sparse.cntk", "20x10_MI_jagged_samples", "20x10_MI_jagged_samples_sparse.txt"),
    ("sparse.cntk", "50x20_jagged_sequences", "50x20_jagged_sequences_sparse.txt"),
    ("sparse.cntk", "100x100_jagged", "100x100_jagged_sparse.txt"),
    ("edge_cases.cntk", "space_separated", "space_separated.txt"),
    ("edge_cases.cntk", "missing_trailing_newline", "missing_trailing_newline.txt"),
    ("edge_cases.cntk", "blank_lines_ignored", "blank_lines.txt"),
    ("edge_cases.cntk", "empty_samples", "empty_samples.txt"),
    ("edge_cases.cntk", "ref_data_with_escape_sequences", "ref_data_with_escape_sequences.txt"),
])
def test_cntk_baseline_one_minibatch(config, section, control):
    """The whole file in one minibatch: per stream, the same samples as CNTK printed. CNTK packs
    sequences of unequal length into parallel slots, so the order of samples is compared as a multiset."""
    batch = corpus_reader(section, config).read_all()
    printed, at = baseline(control), 0
    for name in stream_order(batch):
        ours = batch.dense(name).astype(np.float64)
        theirs = printed[at:at + ours.size].reshape(ours.shape)
        at += ours.size
        np.testing.assert_allclose(np.array(sorted(map(tuple, theirs))), np.array(sorted(map(tuple, ours))),
                                   rtol=1e-5, err_msg=f"stream {name}")
    assert at == printed.size


@pytest.mark.parametrize("section, line, reason", [
    ("blank_lines", 2, "empty line"),  # CNTK: "Reached the maximum number of allowed errors"
    ("duplicate_inputs", 1, "stream 'features2' appears twice on the line"),
])
def test_cntk_rejects_what_cntk_rejects(section, line, reason):
    with pytest.raises(CTFError) as err:
        corpus_reader(section, "edge_cases.cntk").read_all()
    assert (err.value.line, err.value.reason) == (line, reason)


def cntk_log_by_line(data: Path, log: Path) -> list[tuple[int, str]]:
    """(line, message) for each message of CNTK's log; offsets become 1-based line numbers."""
    text = data.read_bytes()
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == ord("\n")]
    found = []
    for message in re.split(r"\n(?=WARNING|INFO)", log.read_text()):
        offset = int(re.search(r"at offset (\d+)", message).group(1))
        if message.startswith(("WARNING: Empty input row", "WARNING: Could not read a row")):
            offset -= 1  # reported after the row's '\n' was consumed
        found.append((bisect.bisect_right(starts, offset), message))
    return found


def test_cntk_invalid_inputs_flagged_on_the_same_lines():
    """CNTK's invalid_inputs test (maxErrors=99999) logs every problem it meets; we must flag the same
    lines. CNTK drops only the bad sample and then also reports the sequence that lost it as short;
    we drop the whole line, so only sequences that are short by themselves are reported."""
    root = require_dataset("cntk") / "ctf" / "unit"
    reader = CTFReader(root / "data/invalid_inputs.txt", {"A": StreamSpec(1), "B": StreamSpec(10, "sparse")},
                       on_error="skip")
    batch = reader.read_all()
    log = cntk_log_by_line(root / "data/invalid_inputs.txt", root / "control/invalid_inputs_Control.txt")
    sequence_level = ("WARNING: Number of samples", "WARNING: Could not read",
                      "WARNING: Exhausted all input expected for the current sequence (")
    tolerated = ("has a sparse suffix", "Possibly, a trailing newline is missing", "while reading a sparse sample")
    cntk_lines = {line for line, m in log if m.startswith(("WARNING", "INFO: Skipping"))
                  and not m.startswith(sequence_level) and not any(t in m for t in tolerated)}
    ours = {i.line for i in reader.skipped if i.line == i.last_line}
    assert ours == cntk_lines
    cntk_short = {int(re.search(r"id = (\d+)", m).group(1))
                  for _, m in log if m.startswith("WARNING: Number of samples")}
    our_short = {int(re.search(r"sequence (\d+)", i.reason).group(1))
                 for i in reader.skipped if i.line != i.last_line}
    assert our_short == {3, 123} and our_short <= cntk_short
    assert cntk_short - our_short == {1, 2, 4}  # each lost a bad sample in CNTK, a whole line here
    assert {i.line for i in reader.warnings} == {line for line, m in log if any(t in m for t in tolerated)}
    np.testing.assert_array_equal(batch.sequence_ids, [1, 2, 4, 5, 6])


@pytest.mark.parametrize("name, sequences", [
    ("ATIS_atis.test.ctf", 893), ("CMUDict_tiny.ctf", 1), ("SequenceClassification_Train.ctf", 1247),
    ("Simple2d_SimpleDataTest_cntk_text.txt", 603), ("LogReg_Test_cntk_text.txt", 500),
    ("LogReg_Test-3Classes_cntk_text.txt", 500), ("MultiModal_train.ctf", 4),
    ("DataReading_CompositeReaders_test.ctf", 4),
])
def test_cntk_example_files_read_with_inferred_streams(name, sequences):
    path = require_dataset("cntk") / "ctf" / "examples" / name
    reader = CTFReader(path, infer_lines=100_000)
    batch = reader.read_all()
    assert len(batch) == reader.count_sequences() == sequences
    assert reader.skipped_count == 0
    for stream, spec in reader.streams.items():
        assert batch.lengths[stream].sum() == (batch[stream].shape[0])
        assert batch[stream].shape[1] == spec.dim
