"""The compiled half of the CTF fast path: one pass over a chunk's bytes, for every form of the grammar.

Why numba (issue 14; bench/bench_ctf.py --options and docs/BENCHMARKS.md have the figures): numpy's
C text parsers (``np.fromstring``, ``np.loadtxt``) and pyarrow's CSV reader read a dense float CTF
file at 0.8-2.2x the plain Python parser, and none of them can step over stream names, sparse
``i:v`` pairs, comments or sequence ids, so every other form would still need a Python pass. A
byte-level scanner compiled by numba follows ``grammar``'s rules directly and takes every form
in one pass (10.6-17.6x the plain parser, CPU time). ``cache=True``: the ~10 CPU-seconds of compiling
are paid once per machine.

``scan`` accepts only lines that the line parser accepts without a warning, with the same values,
and returns a non-zero code for anything else (the caller then gives the chunk to the line parser,
which decides and words the error). Numbers are converted exactly: a number whose digits make an
integer up to 2**53 and whose decimal exponent is within +-22 is one IEEE multiply or divide of two
exact doubles (Clinger's fast path: correctly rounded, as strtod is); other numbers (17-digit reprs,
1e-30) are copied out and converted by the line parser's own ``np.fromstring``.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

OK, BAD_LINE, BAD_NAME, UNKNOWN, DUPLICATE, BAD_VALUE, BAD_COUNT, NO_SAMPLES = range(8)
_EXACT = np.array([10.0 ** k for k in range(23)])  # 1e0..1e22: each exact in a double
_MAX_MANTISSA = 2 ** 53  # every integer up to this is an exact double
_SPACE, _TAB, _LF, _CR, _BAR, _HASH, _COLON, _DOT = 32, 9, 10, 13, 124, 35, 58, 46
_SEPARATOR = np.zeros(256, np.uint8)  # what may follow a number: whitespace, '|', end of line (CR of CRLF)
_SEPARATOR[[_SPACE, _TAB, _LF, _CR, _BAR]] = 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _at(buf, i):
    """The byte at i as an int64. Measured: numba's uint8 comparisons and arithmetic are 5x slower,
    and an unsigned index (no negative-index wraparound) 1.25x faster."""
    return np.int64(buf[np.uint64(i)])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _is_digit(c):
    """One unsigned compare: numba's ``48 <= c <= 57`` measured 3x slower in the number loop."""
    return np.uint64(c - 48) < 10


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _decimal(buf, i):
    """[+-]digits[.digits] at i -> (end, next byte, negative, mantissa, digits, digits before '.',
    exponent). Leading zeros count as digits: past 18 the int64 mantissa may wrap (then inexact)."""
    c = _at(buf, i)
    negative = c == 45
    if c == 43 or c == 45:
        i += 1
        c = _at(buf, i)
    mantissa, digits, exponent = 0, 0, 0
    while _is_digit(c):
        mantissa = mantissa * 10 + (c - 48)
        digits += 1
        i += 1
        c = _at(buf, i)
    whole = digits
    if c == _DOT:
        i += 1
        c = _at(buf, i)
        while _is_digit(c):
            mantissa = mantissa * 10 + (c - 48)
            digits += 1
            exponent -= 1
            i += 1
            c = _at(buf, i)
    return i, c, negative, mantissa, digits, whole, exponent


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fast_number(buf, i):
    """A decimal without exponent at i, then a separator, exactly convertible -> (end, value);
    (-1, 0.0) for anything else, which ``_number`` decides."""
    i, c, negative, mantissa, digits, whole, exponent = _decimal(buf, i)
    if not _SEPARATOR[c] or whole == 0 or (digits > 15 and (digits > 18 or mantissa > _MAX_MANTISSA)):
        return -1, 0.0  # (with at most 18 digits, the exponent is within -22)
    value = mantissa / _EXACT[-exponent]  # one correctly rounded IEEE division of two exact doubles
    return i, -value if negative else value


@njit(cache=True, nogil=True, error_model="numpy")
def _number(buf, i):
    """CNTK number at i -> (end, value, exact); end -1: not CNTK's syntax, or not followed by a separator.
    exact False: a valid number that the caller converts with strtod (too many digits, 1e-30)."""
    i, c, negative, mantissa, digits, whole, exponent = _decimal(buf, i)
    if whole == 0:  # CNTK wants a digit before any '.'
        return -1, 0.0, False
    if not _SEPARATOR[c]:
        i, exponent = _exponent(buf, i, exponent)
        if i < 0:
            return -1, 0.0, False
    if digits > 18 or mantissa > _MAX_MANTISSA or exponent > 22 or exponent < -22:
        return i, 0.0, False
    value = mantissa * _EXACT[exponent] if exponent >= 0 else mantissa / _EXACT[-exponent]
    return i, -value if negative else value, True


@njit(cache=True, nogil=True, error_model="numpy")
def _exponent(buf, i, exponent):
    """'e'/'E' [+-] digits at i, then a separator -> (end, exponent + its value); (-1, 0) otherwise.
    The caller's digits came before: a '.' right before the 'e' ('1.e5') is not CNTK's syntax."""
    c = _at(buf, i)
    if (c | 32) != 101 or _at(buf, i - 1) == _DOT:
        return -1, 0
    i += 1
    c = _at(buf, i)
    sign = -1 if c == 45 else 1
    if c == 43 or c == 45:
        i += 1
        c = _at(buf, i)
    power, digits = 0, 0
    while _is_digit(c):
        power = power * 10 + (c - 48) if power < 100000 else power
        digits += 1
        i += 1
        c = _at(buf, i)
    if digits == 0 or not _SEPARATOR[c]:
        return -1, 0
    return i, exponent + sign * power


# Eight bytes at a time (SWAR): the top bit of each byte of a uint64 that is not an ASCII digit, exact
# for the lowest such byte, the only one used (a carry or borrow starts at a flagged byte and only
# reaches the bytes above it).
_U = np.uint64
_ZEROS, _PAST_NINE, _TOPS = _U(0x3030303030303030), _U(0x4646464646464646), _U(0x8080808080808080)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _load8(buf, i):
    """Bytes i..i+7 as one little-endian uint64 (LLVM folds the eight loads into one)."""
    return (_U(_at(buf, i)) | _U(_at(buf, i + 1)) << _U(8) | _U(_at(buf, i + 2)) << _U(16)
            | _U(_at(buf, i + 3)) << _U(24) | _U(_at(buf, i + 4)) << _U(32) | _U(_at(buf, i + 5)) << _U(40)
            | _U(_at(buf, i + 6)) << _U(48) | _U(_at(buf, i + 7)) << _U(56))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _integer8(w):
    """(k, value): the k (1-7) digits that the 8 bytes of w start with, and their value; k 0 when w
    starts with a non-digit or with 8 digits. fast_float's 8-digit SWAR conversion, the digits moved to
    the top bytes first (zeros below them: the same number)."""
    stop = ((w + _PAST_NINE) | (w - _ZEROS)) & _TOPS  # the first byte that is not a digit
    k = np.int64(trailing_zeros(stop | _U(1 << 63))) >> 3  # 7 when all are digits: k < 8 keeps the shift defined
    d = (w - _ZEROS) << _U(64 - 8 * k)
    d = d * _U(10) + (d >> _U(8))
    d = (((d & _U(0x000000FF000000FF)) * _U(0x000F424000000064))
         + (((d >> _U(16)) & _U(0x000000FF000000FF)) * _U(0x0000271000000001))) >> _U(32)
    return (k if stop else 0), np.float64(np.int64(d & _U(0xFFFFFFFF)))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _index(buf, i, dim):
    """Sparse index at i, up to its ':' -> (index after the ':', column); -1: not 'digits:' or >= dim."""
    column, digits = 0, 0
    c = _at(buf, i)
    while _is_digit(c):
        column = column * 10 + (c - 48) if column < dim else column
        digits += 1
        i += 1
        c = _at(buf, i)
    if digits == 0 or c != _COLON or column >= dim:
        return -1, 0
    return i + 1, column


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _name_end(buf, i):
    """End of the stream name at i (a space, tab, '|' or end of line), or -1 at a control character."""
    while True:
        c = _at(buf, i)
        if c == _SPACE or c == _TAB or c == _BAR or c == _LF or (c == _CR and _at(buf, i + 1) == _LF):
            return i
        if c < 32 or c == 127:
            return -1
        i += 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _skip(buf, i):
    """To the next '|' or end of line: a comment, or a stream the reader ignores (unchecked, as there)."""
    while _at(buf, i) != _BAR and _at(buf, i) != _LF:
        i += 1
    return i


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _lookup(buf, begin, end, names, name_ends):
    """Index of the declared stream named buf[begin:end], or -1."""
    for s in range(name_ends.size - 1):
        lo, hi = name_ends[s], name_ends[s + 1]
        if hi - lo == end - begin:
            k = 0
            while k < hi - lo and names[lo + k] == _at(buf, begin + k):
                k += 1
            if k == hi - lo:
                return s
    return -1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sequence_id(buf, i):
    """The digits at a line's start -> (end, id or -1 for none, ok); not ok past 18 significant digits
    (the line parser then decides whether the id fits in an int64)."""
    value, digits, significant = 0, 0, 0
    c = _at(buf, i)
    while _is_digit(c):
        significant += value > 0 or c > 48
        value = value * 10 + (c - 48)
        digits += 1
        i += 1
        c = _at(buf, i)
    return i, value if digits else -1, significant <= 18


@njit(cache=True, nogil=True, error_model="numpy")
def scan(buf, names, name_ends, sparse, dims, ignore_unknown, seq, start, count, dense, dense_at, dense_rows,
         vals, cols, hard_at, hard_buf):
    """Every line of buf (complete lines, ending in '\\n') into the tables.

    Streams: names concatenated (uint8) and their end offsets from 0, sparse flags, dims.
    seq[line]: its sequence id or -1. start, count: (lines, streams) int64, start pre-set to -1: the
    line's sample of each stream, and how many values it has.
    Dense stream s: its samples are the rows of ``dense[dense_at[s]:]``, (dense_rows[s], dim), in file
    order; start is the row. Written in place: the batch is a view of them, no copy (measured: copying
    was 15% of an integer file's read). Sparse: start is where its values begin in vals (float32 or
    float64), their indices beside them in cols.
    hard_at, hard_buf: where the numbers left to strtod go (a dense one's index i in ``dense`` as -1-i),
    and their text, space-separated.
    Returns (code, line, values in vals, hard numbers, hard_buf bytes); code != OK: declined at that line.

    One function, its loops written out: the previous version called a helper once per sample with the
    value arrays, and numba's atomic reference counting on each such call made ATIS-like files (three
    short samples a line) scan at 90 MB/s (docs/BENCHMARKS.md, "CTF reader").
    """
    stored, hard, hard_bytes = 0, 0, 0
    rows = np.zeros(dims.size, np.int64)
    i, line = 0, 0
    while i < buf.size:
        i, seq[line], ok = _sequence_id(buf, i)
        if not ok:
            return BAD_LINE, line, stored, hard, hard_bytes
        c = _at(buf, i)
        while c == _SPACE or c == _TAB:
            i += 1
            c = _at(buf, i)
        found = 0
        while c == _BAR:
            i += 1
            if _at(buf, i) == _HASH:
                i = _skip(buf, i)
                c = _at(buf, i)
                continue
            end = _name_end(buf, i)
            if end <= i:
                return BAD_NAME, line, stored, hard, hard_bytes  # empty, or a control character in it
            s = _lookup(buf, i, end, names, name_ends)
            if s < 0:
                if not ignore_unknown:
                    return UNKNOWN, line, stored, hard, hard_bytes
                i = _skip(buf, end)
                c = _at(buf, i)
                continue
            if start[line, s] >= 0:
                return DUPLICATE, line, stored, hard, hard_bytes
            is_sparse, dim = sparse[s], dims[s]
            if is_sparse:
                start[line, s] = first = at = stored
                limit = vals.size
            else:
                if rows[s] == dense_rows[s]:
                    return BAD_COUNT, line, stored, hard, hard_bytes  # (cannot happen: 2 bytes a value at least)
                start[line, s] = rows[s]
                first = at = dense_at[s] + rows[s] * dim
                limit = first + dim
            i = end
            if not is_sparse:
                # Unsigned integers of 1-7 digits after single spaces (pixels), while there are any;
                # the loop below takes the rest (signs, decimals, tabs). Where the next value starts
                # comes from one 8-byte load and a few ALU operations, so the loads do not wait on the
                # digit loop's exit branch, which mispredicts on numbers of varying length: the
                # integer file's scan 121 -> 75 ms (bench_ctf.py's file, 33 MB). Decimals done alike
                # (the '.' cut out of the 8 bytes, or each side converted) measured 1.1-1.5x slower
                # than the loop: there the work per value bounds it, not the branch. Written out, not
                # a helper taking buf: numba then counts buf's references (atomically) on each call,
                # which made this 2x slower than the loop; a sign handled here (as data) 1.5x slower.
                while at < limit and _at(buf, i) == _SPACE and i + 17 <= buf.size:
                    k, value = _integer8(_load8(buf, i + 1))
                    if k == 0 or not _SEPARATOR[_at(buf, i + 1 + k)]:
                        break
                    dense[np.uint64(at)] = value
                    at += 1
                    i += 1 + k
            while True:  # the sample's values, up to the next '|' or end of line
                c = _at(buf, i)
                while c == _SPACE or c == _TAB:
                    i += 1
                    c = _at(buf, i)
                if c == _BAR or c == _LF:
                    break
                if c == _CR and _at(buf, i + 1) == _LF:
                    i += 1
                    c = _LF
                    break
                if at == limit:
                    return BAD_COUNT, line, stored, hard, hard_bytes  # more than dim: the line parser's error
                if is_sparse:
                    i, cols[np.uint64(at)] = _index(buf, i, dim)
                    if i < 0:
                        return BAD_VALUE, line, stored, hard, hard_bytes
                j, value = _fast_number(buf, i)
                if j < 0:
                    j, value, exact = _number(buf, i)
                    if j < 0:
                        return BAD_VALUE, line, stored, hard, hard_bytes
                    if not exact:  # strtod's job: keep the text and where its value goes
                        hard_at[hard] = at if is_sparse else -1 - at
                        hard_buf[hard_bytes:hard_bytes + j - i] = buf[i:j]
                        hard_buf[hard_bytes + j - i] = _SPACE
                        hard += 1
                        hard_bytes += j - i + 1
                if is_sparse:
                    vals[np.uint64(at)] = value
                else:
                    dense[np.uint64(at)] = value
                at += 1
                i = j
            count[line, s] = at - first
            if is_sparse:
                stored = at
            elif at != limit:
                return BAD_COUNT, line, stored, hard, hard_bytes  # fewer than dim: padded with a warning there
            else:
                rows[s] += 1
            found += 1
        if c != _LF:
            return BAD_LINE, line, stored, hard, hard_bytes  # no '|' after the id, or a stray CR
        if not found:
            return NO_SAMPLES, line, stored, hard, hard_bytes
        i += 1
        line += 1
    return OK, line, stored, hard, hard_bytes


@njit(cache=True, nogil=True, error_model="numpy")
def gather(start, count, s, lo, stop, vals, cols):
    """Sparse stream s's samples on lines lo..stop-1, in file order -> (rows, cols, values) (COO, a row
    per sample) in fresh arrays. One pass: the numpy version (repeat, cumsum, fancy indexing) was a
    third of an ATIS-like file's read."""
    nnz = 0
    for k in range(lo, stop):
        if start[k, s] >= 0:
            nnz += count[k, s]
    out_rows, out_cols, out_vals = np.empty(nnz, np.int64), np.empty(nnz, np.int64), np.empty(nnz, vals.dtype)
    n, row = 0, 0
    for k in range(lo, stop):
        at = start[k, s]
        if at >= 0:
            for t in range(at, at + count[k, s]):
                out_rows[n], out_cols[n], out_vals[n] = row, cols[t], vals[t]
                n += 1
            row += 1
    return out_rows, out_cols, out_vals, row


@njit(cache=True, nogil=True, error_model="numpy")
def count_lines(buf):
    """Number of '\\n' in buf (3x faster than bytes.count, measured)."""
    n = 0
    for i in range(buf.size):
        n += buf[i] == _LF
    return n
