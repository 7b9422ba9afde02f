"""The compiled CTF fast path against the line parser, the reference, on generated files.

Property: for any file and any reader options, ``CTFReader(vectorized=True)`` gives the same batches
(bit for bit), the same skipped lines and warnings, or the same error message as
``vectorized=False``. The fast path may only decline a chunk, never decide about it. A second
property checks that it does take every well-formed file, whatever its form.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearsight.cntk.ctf import CTFError, CTFReader, SparseBatch, StreamSpec

STREAMS = {"a": StreamSpec(3), "b": StreamSpec(6, "sparse"), "e": StreamSpec(0), "f": StreamSpec(2, alias="é#")}
DENSE = {"a": 3, "e": 0}
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

digits = st.text("0123456789", min_size=1, max_size=22)
exponent = st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                     st.text("0123456789", min_size=1, max_size=3))
# CNTK's number syntax: [+-] digits ['.' [digits]] [(e|E) [+-] digits], but never '.' then exponent
cntk_number = st.one_of(
    st.integers(-300, 300).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),  # 17 significant digits, 1e-300
    st.floats(-1e3, 1e3).map(lambda x: f"{x:.6f}"),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.18e}"),  # np.savetxt's default
    st.builds(lambda s, whole, frac, exp: s + whole + frac + (exp if frac != "." else ""),
              st.sampled_from(["", "+", "-"]), digits,
              st.one_of(st.just(""), st.just("."), digits.map(lambda d: "." + d)),
              st.one_of(st.just(""), exponent)),
).filter(lambda t: "inf" not in t and "nan" not in t)
not_a_number = st.sampled_from([".5", "-.5", "1.e5", "inf", "nan", "2.0f", "1e", "+-1", "1-2", "1..2", "0x1",
                                "1:2", ":", "1e+", "\x00", "\xa0", "1\r2", "\r", "1.5.5"])


def sample(draw, name: str, valid: bool) -> str:
    if name == "b":
        count = draw(st.integers(0, 4))
        top = 5 if valid else 7  # dim 6
        pairs = [f"{draw(st.sampled_from(['', '0', '00']))}{draw(st.integers(0, top))}:{draw(cntk_number)}"
                 for _ in range(count)]
        tokens = pairs
    else:
        dim = DENSE.get(name, 2)
        count = dim if valid else draw(st.sampled_from([dim, dim, dim, max(0, dim - 1), dim + 1]))
        tokens = [draw(cntk_number) for _ in range(count)]
    if not valid and tokens and draw(st.integers(0, 9)) == 0:
        tokens[draw(st.integers(0, len(tokens) - 1))] = draw(not_a_number)
    gaps = [draw(st.sampled_from([" ", " ", "\t", "  ", " \t"])) for _ in tokens]
    tail = draw(st.sampled_from(["", " ", "\t"]))
    file_name = "é#" if name == "f" else name
    return "|" + file_name + "".join(g + t for g, t in zip(gaps, tokens)) + tail


@st.composite
def ctf_line(draw, valid: bool, ids: bool) -> str:
    names = ["a", "b", "e", "f"] if valid else draw(st.lists(st.sampled_from(["a", "b", "e", "f", "zz"]),
                                                               min_size=0, max_size=5))
    if valid:
        names = draw(st.permutations(names))
    parts = [sample(draw, name, valid) for name in names]
    comments = draw(st.lists(st.sampled_from(["|# note 1 2 3 ", "|#", "|#x|#y ", "|#\t:.e"]), max_size=2))
    for comment in comments:
        parts.insert(draw(st.integers(0, len(parts))), comment)
    head = ""
    if ids or (not valid and draw(st.booleans())):
        big = [] if valid else [10 ** 19, 2 ** 63 - 1]  # past int64: the line parser's error
        head = str(draw(st.sampled_from([0, 1, 1, 2, 7, 30, 12345678901234567] + big)))
        head += draw(st.sampled_from(["", " ", "\t"]))
    return head + "".join(parts) + draw(st.sampled_from(["\n", "\n", "\r\n"]))


@st.composite
def ctf_file(draw, valid: bool) -> bytes:
    """Well-formed lines; unless valid, a few replaced by lines of any kind and a few bytes inserted."""
    ids = draw(st.booleans())
    lines = draw(st.lists(ctf_line(True, ids), min_size=1, max_size=12))
    if valid:
        return "".join(lines).encode("utf-8")
    for _ in range(draw(st.integers(0, 2))):
        lines[draw(st.integers(0, len(lines) - 1))] = draw(ctf_line(False, ids))
    text = "".join(lines)
    if draw(st.integers(0, 3)) == 0:
        text = text[:-1]  # no final newline (or a lone CR at the end)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["\r", "\t", "|", "#", " ", "1", ":", ".", "\n", "\x00"])) + text[at:]
    return text.encode("utf-8")


reader_options = st.fixed_dictionaries({
    "chunk_bytes": st.sampled_from([1, 16, 50, 4096]),
    "skip_sequence_ids": st.booleans(),
    "on_error": st.sampled_from(["raise", "skip"]),
    "max_errors": st.sampled_from([None, 2]),
    "unknown_streams": st.sampled_from(["error", "ignore"]),
    "short_dense": st.sampled_from(["pad", "error"]),
    "dtype": st.sampled_from([np.float32, np.float64]),
})


def frozen(array: np.ndarray) -> tuple:
    return array.dtype.str, array.shape, array.tobytes()  # bit for bit: -0.0 differs from 0.0


def outcome(path, options: dict, vectorized: bool):
    """Everything a caller can see of a pass over the file."""
    try:
        reader = CTFReader(path, STREAMS, vectorized=vectorized, **options)
        batches = []
        for batch in reader.minibatches(3):
            data = {name: (frozen(v.rows), frozen(v.cols), frozen(v.values), v.shape) if isinstance(v, SparseBatch)
                    else frozen(v) for name, v in batch.items()}
            batches.append((data, frozen(batch.sequence_ids), frozen(batch.lines),
                            {k: frozen(v) for k, v in batch.lengths.items()}))
        return batches, reader.skipped, reader.warnings, reader.skipped_count, reader.warning_count, reader.chunk_stats
    except CTFError as err:
        return "CTFError", str(err), err.line, err.last_line


def both(tmp_path, text: bytes, options: dict) -> tuple:
    path = tmp_path / "g.ctf"
    path.write_bytes(text)
    return outcome(path, options, True), outcome(path, options, False)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e300 as float32: inf, both ways
@SETTINGS
@given(text=ctf_file(valid=False), options=reader_options)
def test_fast_path_and_line_parser_agree(tmp_path, text, options):
    fast, slow = both(tmp_path, text, options)
    if fast[0] == "CTFError" or slow[0] == "CTFError":
        assert fast == slow
    else:
        assert fast[:-1] == slow[:-1]  # all but chunk_stats, which say which parser ran


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e300 as float32: inf, both ways
@SETTINGS
@given(text=ctf_file(valid=True), options=reader_options)
def test_fast_path_takes_every_well_formed_file(tmp_path, text, options):
    options.update(on_error="raise", unknown_streams="error", short_dense="error")
    fast, slow = both(tmp_path, text, options)
    assert slow[0] != "CTFError" and fast[:-1] == slow[:-1]
    assert fast[-1]["line_by_line"] == 0 and fast[-1]["vectorized"] > 0


@pytest.mark.parametrize("text", [
    b"|a 1 2 3 |b 7:1 |e |\xc3\xa9# 1 2\n",  # sparse index out of range
    b"|a 1 2 |b |e |\xc3\xa9# 1 2\n",  # short dense sample: padded with a warning
    b"|a 1 2 3 |b |e |\xc3\xa9# 1 2 |a 1 2 3\n",  # a stream twice
    b"|a 1 2 3 |b 1:.5 |e |\xc3\xa9# 1 2\n",  # not CNTK's number syntax
    b"|a 1 2 3 |b 1:1 |e |\xc3\xa9# 1 2\r\r\n",  # a CR that is not part of CRLF
    b"|a 1 2 3 |b 1:1 |e |\xc3\xa9# 1 2\n\n",  # an empty line
])
def test_fast_path_declines_what_the_line_parser_rejects_or_warns_about(tmp_path, text):
    fast, slow = both(tmp_path, b"|a 1 2 3 |b |e |\xc3\xa9# 1 2\n" + text, {"on_error": "skip"})
    assert fast[:-1] == slow[:-1] and (fast[1] or fast[2])  # something was skipped or warned about
    assert fast[-1]["line_by_line"] == 1


def test_eight_byte_integer_path_agrees_with_the_digit_loop(tmp_path):
    """Dense integers of 1-9 digits, with signs, tabs, CRLF, a '|' straight after a value and a NUL
    after a digit: the 8-byte path (unsigned, <= 7 digits, after one space) and the loop it hands the
    rest to give the line parser's values, and the bad line is declined."""
    values = ["0", "7", "255", "1234567", "12345678", "123456789", "-3", "+4", "007", "9999999"]
    lines = []
    for k in range(len(values)):
        a = [values[(k + j) % len(values)] for j in range(3)]
        lines.append(f"|a {a[0]} {a[1]}\t{a[2]}|b 1:{a[0].lstrip('+-')} |e |\u00e9# 1 2\r\n")
    good = "".join(lines).encode()
    fast, slow = both(tmp_path, good, {})
    assert fast[:-1] == slow[:-1] and fast[-1]["line_by_line"] == 0
    fast, slow = both(tmp_path, good + b"|a 1 2 3\x00 |b |e |\xc3\xa9# 1 2\n", {"on_error": "skip"})
    assert fast[:-1] == slow[:-1] and fast[1] and fast[-1]["line_by_line"] == 1


@pytest.mark.parametrize("vectorized", [True, False])
def test_a_line_rejected_for_an_id_past_int64_names_no_sequence(tmp_path, vectorized):
    """Found by the property test above: the rejected line's id used to open a sequence, and the
    lines after it then crashed the batch (OverflowError) instead of forming their own sequence."""
    path = tmp_path / "big-id.ctf"
    path.write_bytes(b"10000000000000000000 |a 9 9 9\n|a 0 0 0\n|a 1 1 1\n")
    reader = CTFReader(path, {"a": StreamSpec(3)}, vectorized=vectorized, on_error="skip")
    (batch,) = reader.minibatches(8)
    assert "sequence id '10000000000000000000' is too large" in str(reader.skipped[0])
    assert batch.sequence_ids.tolist() == [1] and batch.lengths["a"].tolist() == [2]
    assert batch["a"].tolist() == [[0, 0, 0], [1, 1, 1]]
