"""The CTF fast path: a chunk of lines scanned by compiled code (``scan``), then cut into
sequences and batches with whole-array numpy.

Every form of the grammar takes it: dense or sparse streams in any order, sequence ids, comments,
CRLF, ignored streams, any number syntax CNTK allows. ``scan_chunk`` returns None whenever a line is
anything the line parser would reject or warn about (a malformed value, a short dense sample, an
undeclared stream...), and the caller then parses the chunk with the full-grammar line parser, which
also words the error. So this path never decides that input is bad: it only declines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batch import CTFBatch, SparseBatch
from .grammar import BoundStream, LineParser, _strtod
from .scan import OK, gather, scan


@dataclass
class LineTable:
    """A scanned chunk: line k's sample of stream s, if ``start[k, s] >= 0``. Dense: row ``start[k, s]``
    of ``dense[s]`` (samples in file order); sparse: ``count[k, s]`` values from ``vals[start[k, s]]``,
    their indices beside them in ``cols``."""

    first_line: int
    seq: np.ndarray  # (lines,) sequence id, -1 for none
    start: np.ndarray  # (lines, streams)
    count: np.ndarray
    dense: list[np.ndarray | None]  # per stream: (rows, dim) in the reader's dtype, fresh; None if sparse
    vals: np.ndarray  # sparse values as the line parser's strtod gives them, in the reader's dtype
    cols: np.ndarray
    streams: list[BoundStream]

    def __len__(self) -> int:
        return len(self.seq)

    def samples(self, k: int) -> dict[str, object]:
        """Line k's samples as the line parser gives them (for ``Sequence.add``)."""
        out: dict[str, object] = {}
        for s, stream in enumerate(self.streams):
            at = self.start[k, s]
            if at < 0:
                continue
            rows = self.dense[s]
            if rows is not None:
                out[stream.name] = rows[at].copy()
            else:
                stop = at + self.count[k, s]
                out[stream.name] = (self.cols[at:stop].copy(), self.vals[at:stop].copy())
        return out

    def sequences_hold(self, starts: np.ndarray, stop: int) -> bool:
        """``Sequence.check`` for the sequences beginning at lines ``starts`` (the last ending before
        ``stop``): every stream has a sample, and one stream has a sample on every line."""
        if starts.size == 0:
            return True
        counts = np.add.reduceat((self.start[:stop] >= 0).astype(np.int64), starts, axis=0)  # (sequences, streams)
        spans = np.diff(np.append(starts, stop))
        return bool((counts > 0).all() and (counts.max(axis=1) >= spans).all())

    def batch(self, starts: np.ndarray, stop: int, ids: np.ndarray) -> CTFBatch:
        """The sequences beginning at lines ``starts`` (the last ending before ``stop``) as a batch."""
        data: dict[str, np.ndarray | SparseBatch] = {}
        lengths: dict[str, np.ndarray] = {}
        lo = int(starts[0]) if starts.size else stop
        for s, stream in enumerate(self.streams):
            present = self.start[lo:stop, s] >= 0
            lengths[stream.name] = (np.add.reduceat(present.astype(np.int64), starts - lo) if starts.size
                                    else np.zeros(0, np.int64))
            rows = self.dense[s]
            if rows is None:
                r, c, v, n = gather(self.start, self.count, s, lo, stop, self.vals, self.cols)
                data[stream.name] = SparseBatch(r, c, v, (n, stream.spec.dim))
            else:  # the samples in [lo, stop) are consecutive rows
                first = self.start[lo:stop, s][present]
                top = int(first[0]) if first.size else 0
                data[stream.name] = rows[top:top + first.size]
        lines = self.first_line + starts.astype(np.int64)
        return CTFBatch(data, ids.astype(np.int64), lines, lengths)


class Scratch:
    """Work arrays kept from chunk to chunk: fresh ones cost a page fault per 4 KiB written, which
    measured up to half of an integer file's read time. A LineTable is valid until the next scan."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, size: int, dtype: type) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.size < size:
            array = self._arrays[name] = np.empty(size, dtype)
        return array[:size]


def scan_chunk(buf: bytes | memoryview, n_lines: int, parser: LineParser, first_line: int,
               scratch: Scratch) -> LineTable | None:
    """``n_lines`` complete lines (``buf`` ends with '\\n') -> their LineTable, or None (see the module doc)."""
    streams = list(parser.streams.values())
    names = list(parser.streams)
    cap = len(buf) // 2 + 1  # a value takes at least one byte and one separator
    seq = scratch.get("seq", n_lines, np.int64)
    start = scratch.get("start", n_lines * len(streams), np.int64).reshape(n_lines, len(streams))
    count = scratch.get("count", n_lines * len(streams), np.int64).reshape(n_lines, len(streams))
    start.fill(-1)
    dtype = np.float32 if parser.dtype == np.float32 else np.float64  # float32 stored as such: half the bytes
    dims = np.array([stream.spec.dim for stream in streams], np.int64)
    sparse = np.array([stream.spec.format == "sparse" for stream in streams], np.bool_)
    dense_rows = np.where(sparse, 0, np.minimum(n_lines, cap // np.maximum(dims, 1)))  # all that fit in buf
    dense_at = np.cumsum(dense_rows * dims) - dense_rows * dims
    dense = np.empty(int((dense_rows * dims).sum()), dtype)  # fresh: the batches are views of it
    vals = scratch.get("vals32" if dtype == np.float32 else "vals", cap if sparse.any() else 0, dtype)
    cols = scratch.get("cols", cap if sparse.any() else 0, np.int64)
    hard_at, hard_buf = scratch.get("hard_at", cap, np.int64), scratch.get("hard_buf", len(buf) + 1, np.uint8)
    name_ends = np.cumsum([0] + [len(name) for name in names]).astype(np.int64)
    code, _, _, n_hard, hard_bytes = scan(as_readonly(buf), np.frombuffer(b"".join(names), np.uint8), name_ends,
                                          sparse, dims, parser.unknown_streams == "ignore", seq, start, count,
                                          dense, dense_at, dense_rows, vals, cols, hard_at, hard_buf)
    if code != OK:
        return None
    if n_hard:  # the numbers outside the exact fast path: strtod, as the line parser converts them
        values = _strtod(hard_buf[:hard_bytes].tobytes())
        if values.size != n_hard:
            return None
        at = hard_at[:n_hard]
        vals[at[at >= 0]] = values[at >= 0]
        dense[-1 - at[at < 0]] = values[at < 0]
    rows = [None if sparse[s] else dense[dense_at[s]:dense_at[s] + dense_rows[s] * dims[s]].reshape(dense_rows[s], dims[s])
            for s in range(len(streams))]
    return LineTable(first_line, seq, start, count, rows, vals, cols, streams)


def as_readonly(buf: bytes | memoryview) -> np.ndarray:
    """The bytes as a read-only uint8 array, whatever holds them: numba compiles (~10 s) a variant
    per array type, and chunks come from a bytearray, the last one from bytes."""
    a = np.frombuffer(buf, np.uint8)
    a.flags.writeable = False
    return a
