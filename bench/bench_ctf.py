"""CTF reader throughput vs a plain line-by-line Python parser, on every form of file, in one run.

    nice -n 10 .venv/bin/python bench/bench_ctf.py [--samples 5000] [--repeats 5] [--options]

Forms (written to a temp dir):
  - integer: random 32x32x3 uint8 images with one-hot labels, what ``gearsight pack --format ctf``
    writes for CIFAR-10 (``--samples`` images);
  - float: the same pixels / 255 with 6 significant digits (``--samples`` / 5 images);
  - sparse: bag-of-words lines, 40 ``index:1`` pairs of a 20,000-word vocabulary and a sparse label;
  - sequences: CNTK's ATIS test file (sequence ids, three sparse streams, tab-separated, a comment
    after every sample) repeated to ~10 MB, each copy with new ids.
Each form is timed three ways, interleaved within each repeat, median of ``--repeats``:
  - baseline: ``for line in f``, split on '|' and whitespace, ``float()``/``int()`` every token;
  - gearsight ``CTFReader(...).minibatches(256)``: the compiled fast path (``gearsight.cntk.ctf.scan``);
  - the same reader forced onto its full-grammar line parser (``vectorized=False``), the reference.
Every reader's output is checked equal to the baseline's before its time is printed. The first
call's cost (numba compiling, or loading its cache) is measured in fresh processes.
``--options`` also times the candidates issue 14 asked to measure, on the float file.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gearsight.cntk.ctf import CTFReader, SparseBatch, StreamSpec, write_ctf

CIFAR = {"features": StreamSpec(3072), "labels": StreamSpec(10)}
WORDS = {"x": StreamSpec(20000, "sparse"), "y": StreamSpec(20, "sparse")}
ATIS = {"S0": StreamSpec(944, "sparse"), "S1": StreamSpec(944, "sparse"), "S2": StreamSpec(129, "sparse")}
ATIS_FILE = Path(__file__).resolve().parents[1] / "../shared/data/cntk/ctf/examples/ATIS_atis.test.ctf"


def baseline_read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Dense CIFAR lines: what one writes without thinking about speed (each line's floats go straight
    into a float32 array, so memory stays that of the result)."""
    features, labels = [], []
    with open(path) as f:
        for line in f:
            streams = {}
            for part in line.split("|")[1:]:
                tokens = part.split()
                streams[tokens[0]] = np.array([float(t) for t in tokens[1:]], np.float32)
            features.append(streams["features"])
            labels.append(streams["labels"])
    return np.stack(features), np.stack(labels)


def baseline_read_sparse(path: Path) -> tuple[list[int], dict[str, tuple[np.ndarray, ...]]]:
    """Sparse lines, with or without sequence ids and comments, the same way: (sequence ids,
    {stream: (samples per sequence, column indices, values)})."""
    ids: list[int] = []
    found: dict[str, tuple[list, list, list]] = {}
    with open(path) as f:
        for n, line in enumerate(f):
            head, *parts = line.split("|")
            seq_id = int(head) if head.strip() else n
            if not ids or seq_id != ids[-1]:
                ids.append(seq_id)
                for counts, _, _ in found.values():
                    counts.append(0)
            for part in parts:
                if part.startswith("#"):
                    continue
                name, *pairs = part.split()
                if name not in found:
                    found[name] = ([0] * len(ids), [], [])
                counts, cols, values = found[name]
                counts[-1] += 1
                for pair in pairs:
                    index, value = pair.split(":")
                    cols.append(int(index))
                    values.append(float(value))
    return ids, {name: (np.array(c), np.array(i), np.array(v, np.float32)) for name, (c, i, v) in found.items()}


def ours_read(path: Path, vectorized: bool = True, streams=CIFAR):
    """The trainer's access pattern: minibatches(256), then joined like the baseline's result."""
    batches = list(CTFReader(path, streams, vectorized=vectorized).minibatches(256))
    if streams is CIFAR:
        return np.concatenate([b["features"] for b in batches]), np.concatenate([b["labels"] for b in batches])
    ids = np.concatenate([b.sequence_ids for b in batches]).tolist()
    joined = {}
    for name in streams:
        parts: list[SparseBatch] = [b[name] for b in batches]
        joined[name] = (np.concatenate([b.lengths[name] for b in batches]),
                        np.concatenate([p.cols for p in parts]), np.concatenate([p.values for p in parts]))
    return ids, joined


def interleaved_medians(runs: dict, repeats: int) -> tuple[dict[str, tuple[float, float]], dict[str, object]]:
    """Median (wall, CPU) seconds of each run. Runs alternate within each repeat, so load that comes
    and goes on this shared machine hits all of them alike; CPU time is what load inflates least."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    results = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
            for name, t in times.items()}, results


def report(size_mb: float, seconds: dict[str, tuple[float, float]]) -> None:
    base_wall, base_cpu = next(iter(seconds.values()))
    print(f"  {'':<44} {'wall s':>7} {'MB/s':>7} {'ratio':>6} | {'CPU s':>6} {'MB/s':>7} {'ratio':>6}")
    for name, (wall, cpu) in seconds.items():
        print(f"  {name:<44} {wall:7.3f} {size_mb / wall:7.1f} {base_wall / wall:6.1f} | "
              f"{cpu:6.3f} {size_mb / cpu:7.1f} {base_cpu / cpu:6.1f}")


def same(a, b) -> None:
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            same(a[key], b[key])
    else:
        np.testing.assert_array_equal(a, b)


def compare(form: str, path: Path, repeats: int, baseline, streams) -> tuple[float, float]:
    """Time the three readers on one file; returns the fast path's (wall, CPU) ratio to the baseline."""
    size_mb = path.stat().st_size / 1e6
    print(f"\n{form}: {path.name}, {size_mb:.1f} MB, median of {repeats}")
    seconds, results = interleaved_medians({
        "baseline: for line in f, split, float()": lambda: baseline(path),
        "gearsight CTFReader (compiled fast path)": lambda: ours_read(path, True, streams),
        "gearsight CTFReader (line parser only)": lambda: ours_read(path, False, streams)}, repeats)
    reference = next(iter(results.values()))
    for result in results.values():
        same(result, reference)
    report(size_mb, seconds)
    (base_wall, base_cpu), (wall, cpu) = list(seconds.values())[:2]
    return base_wall / wall, base_cpu / cpu


def baseline_write(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "w") as f:
        for row, y in zip(rows, labels):
            onehot = " ".join("1" if c == y else "0" for c in range(10))
            f.write(f"|labels {onehot} |features {' '.join(map(str, row))}\n")


def write_words(path: Path, lines: int, rng: np.random.Generator) -> None:
    words = rng.integers(0, 20000, (lines, 40))
    with open(path, "w") as f:
        for row, y in zip(words, rng.integers(0, 20, lines)):
            f.write("|x " + " ".join(f"{w}:1" for w in row) + f" |y {y}:1\n")


def write_atis(path: Path, megabytes: float) -> None:
    """ATIS's test file again and again, its sequence ids shifted so that every copy is new."""
    lines = ATIS_FILE.read_bytes().splitlines(keepends=True)
    ids = [int(line.split(b"\t", 1)[0]) for line in lines]
    rests = [line[line.index(b"\t"):] for line in lines]
    step = max(ids) + 1
    with open(path, "wb") as f:
        copy = 0
        while f.tell() < megabytes * 1e6:
            f.writelines(b"%d%s" % (seq + copy * step, rest) for seq, rest in zip(ids, rests))
            copy += 1


def first_call(path: Path, streams: str) -> dict[str, float]:
    """Seconds from a fresh interpreter's import to the first batch: numba compiling (an empty cache
    directory) and loading its cache (the one the runs above left)."""
    code = ("import time; t = time.perf_counter(); from gearsight.cntk.ctf import CTFReader, StreamSpec; "
            f"next(CTFReader({str(path)!r}, {streams}).minibatches(256)); print(time.perf_counter() - t)")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, env in (("compile (empty numba cache)", {"NUMBA_CACHE_DIR": cache}), ("cached", {})):
            run = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                                 text=True, check=True)
            out[name] = float(run.stdout)
    return out


def options(path: Path, repeats: int) -> None:
    """Issue 14's candidates on the float file: numpy's C text parsers (and pyarrow's CSV reader where
    installed; it is not a dependency) against the baseline and the compiled fast path."""
    text = path.read_bytes()
    blanked = text.replace(b"|labels", b"       ").replace(b"|features", b"         ")
    runs = {"baseline: for line in f, split, float()": lambda: baseline_read(path),
            "numpy: np.fromstring (names blanked first)": lambda: np.fromstring(blanked, sep=" "),
            "numpy: np.loadtxt (C tokenizer, names skipped)": lambda: np.loadtxt(
                blanked.decode().splitlines(), dtype=np.float64)}
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        keep = [f"f{i}" for i in range(3084) if i not in (0, 11)]  # not the two '|name' columns
        runs["pyarrow: csv.read_csv (delimiter ' ', 1 thread)"] = lambda: pcsv.read_csv(
            pa.py_buffer(text), pcsv.ReadOptions(autogenerate_column_names=True, use_threads=False),
            pcsv.ParseOptions(delimiter=" "), pcsv.ConvertOptions(include_columns=keep))
    except ImportError:
        print("  (pyarrow not installed: not measured here)")
    runs["gearsight CTFReader (compiled fast path)"] = lambda: ours_read(path)
    print(f"\noptions, float values: {path.name}, {path.stat().st_size / 1e6:.1f} MB, median of {repeats}")
    seconds, _ = interleaved_medians(runs, repeats)
    report(path.stat().st_size / 1e6, seconds)


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--options", action="store_true",
                        help="instead, time issue 14's candidates (numpy's and pyarrow's parsers) on the float file")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}, load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.samples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.samples)
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        floats, words, atis = Path(tmp) / "cifar_float.ctf", Path(tmp) / "words.ctf", Path(tmp) / "atis.ctf"
        n_float = max(1, args.samples // 5)
        write_ctf(floats, np.round(images[:n_float] / 255.0, 6).reshape(n_float, -1), labels[:n_float], 10)
        if args.options:
            options(floats, args.repeats)
            return 0
        ints, plain = Path(tmp) / "cifar_uint8.ctf", Path(tmp) / "baseline_written.ctf"
        print(f"\nwriter: {args.samples} images 32x32x3, median of {args.repeats}")
        seconds, _ = interleaved_medians({
            "baseline: per-row str.join": lambda: baseline_write(plain, images, labels),
            "gearsight write_ctf": lambda: write_ctf(ints, images, labels, 10)}, args.repeats)
        assert ints.read_bytes() == plain.read_bytes(), "writers disagree"
        report(ints.stat().st_size / 1e6, seconds)
        plain.unlink()
        write_words(words, args.samples * 10, rng)
        write_atis(atis, 10.0)
        ratios["integer"] = compare("integer pixels", ints, args.repeats, baseline_read, CIFAR)
        ratios["float"] = compare("float values", floats, args.repeats, baseline_read, CIFAR)
        ratios["sparse"] = compare("sparse bag of words", words, args.repeats, baseline_read_sparse, WORDS)
        ratios["sequences"] = compare("sequences (ATIS)", atis, args.repeats, baseline_read_sparse, ATIS)
        print("\nfast path vs baseline, wall / CPU: " + ", ".join(
            f"{form} {wall:.1f}x / {cpu:.1f}x" for form, (wall, cpu) in ratios.items()))
        print("first call, import to first batch (s): " + ", ".join(
            f"{name} {seconds:.2f}" for name, seconds in first_call(floats, repr(CIFAR)).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
