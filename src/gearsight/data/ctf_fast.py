"""The CTF fast path: a chunk of lines scanned by compiled code (``ctf_scan``), then cut into
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

from .ctf_batch import CTFBatch, SparseBatch
from .ctf_grammar import BoundStream, LineParser, _strtod
from .ctf_scan import OK, scan


@dataclass
class LineTable:
    """A scanned chunk: for line k and stream s, ``count[k, s]`` values from ``vals[start[k, s]]``
    (start -1: the line has no sample of s); sparse streams' indices sit beside them in ``cols``."""

    first_line: int
    seq: np.ndarray  # (lines,) sequence id, -1 for none
    start: np.ndarray  # (lines, streams)
    count: np.ndarray
    vals: np.ndarray  # as the line parser's strtod gives them, in float64 or already rounded to float32
    cols: np.ndarray
    streams: list[BoundStream]
    dtype: type

    def __len__(self) -> int:
        return len(self.seq)

    def samples(self, k: int) -> dict[str, object]:
        """Line k's samples as the line parser gives them (for ``Sequence.add``)."""
        out: dict[str, object] = {}
        for s, stream in enumerate(self.streams):
            lo = self.start[k, s]
            if lo < 0:
                continue
            hi = lo + self.count[k, s]
            values = self.vals[lo:hi].astype(self.dtype)
            out[stream.name] = (self.cols[lo:hi].copy(), values) if stream.spec.format == "sparse" else values
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
            first = self.start[lo:stop, s][present]
            counts = self.count[lo:stop, s][present]
            lengths[stream.name] = (np.add.reduceat(present.astype(np.int64), starts - lo) if starts.size
                                    else np.zeros(0, np.int64))
            if stream.spec.format == "sparse":
                data[stream.name] = self._sparse(first, counts, stream.spec.dim)
            else:
                data[stream.name] = _rows(self.vals, first, stream.spec.dim).astype(self.dtype)
        lines = self.first_line + starts.astype(np.int64)
        return CTFBatch(data, ids.astype(np.int64), lines, lengths)

    def _sparse(self, first: np.ndarray, counts: np.ndarray, dim: int) -> SparseBatch:
        total = int(counts.sum())
        rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        at = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(total)
        return SparseBatch(rows, self.cols[at], self.vals[at].astype(self.dtype), (counts.size, dim))


def _rows(vals: np.ndarray, first: np.ndarray, dim: int) -> np.ndarray:
    """(samples, dim) values starting at ``first``: a strided view when the samples are evenly spaced
    (the same streams on every line, as in most files), else a gather."""
    if first.size == 0:
        return np.zeros((0, dim))
    step = int(first[1] - first[0]) if first.size > 1 else dim
    if step >= dim and (first.size < 3 or (np.diff(first) == step).all()):
        base = vals[first[0]:]
        return np.lib.stride_tricks.as_strided(base, (first.size, dim), (step * vals.itemsize, vals.itemsize),
                                               writeable=False)
    return vals[first[:, None] + np.arange(dim)]


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
    a = as_readonly(buf)
    cap = len(buf) // 2 + 1  # a value takes at least one byte and one separator
    seq = scratch.get("seq", n_lines, np.int64)
    start = scratch.get("start", n_lines * len(streams), np.int64).reshape(n_lines, len(streams))
    count = scratch.get("count", n_lines * len(streams), np.int64).reshape(n_lines, len(streams))
    start.fill(-1)
    # float32 values are stored as such (the same rounding as the line parser's astype): half the bytes
    vals = scratch.get("vals32" if parser.dtype == np.float32 else "vals", cap,
                       np.float32 if parser.dtype == np.float32 else np.float64)
    cols = scratch.get("cols", cap, np.int64)
    hard_at, hard_buf = scratch.get("hard_at", cap, np.int64), scratch.get("hard_buf", len(buf) + 1, np.uint8)
    code, _, _, n_hard, hard_bytes = scan(a, *_stream_table(names, streams), parser.unknown_streams == "ignore",
                                          seq, start, count, vals, cols, hard_at, hard_buf)
    if code != OK:
        return None
    if n_hard:  # the numbers outside the exact fast path: strtod, as the line parser converts them
        values = _strtod(hard_buf[:hard_bytes].tobytes())
        if values.size != n_hard:
            return None
        vals[hard_at[:n_hard]] = values
    return LineTable(first_line, seq, start, count, vals, cols, streams, parser.dtype)


def _stream_table(names: list[bytes], streams: list[BoundStream]) -> tuple[np.ndarray, ...]:
    ends = np.cumsum([0] + [len(name) for name in names]).astype(np.int64)
    return (np.frombuffer(b"".join(names), np.uint8), ends,
            np.array([s.spec.format == "sparse" for s in streams], np.bool_),
            np.array([s.spec.dim for s in streams], np.int64))


def as_readonly(buf: bytes | memoryview) -> np.ndarray:
    """The bytes as a read-only uint8 array, whatever holds them: numba compiles (~10 s) a variant
    per array type, and chunks come from a bytearray, the last one from bytes."""
    a = np.frombuffer(buf, np.uint8)
    a.flags.writeable = False
    return a
