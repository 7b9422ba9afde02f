"""Minibatches of CTF data: per-stream numpy arrays plus the sequence bookkeeping.

A batch holds B sequences. Each stream's samples are stacked in file order, so a stream has
``lengths[name].sum()`` rows; for the usual one-sample-per-line files every length is 1 and a dense
stream is simply ``(B, dim)`` float32 (the reader's dtype). Sparse streams stay sparse (COO, no scipy
needed): a 1M-dim bag of words densified per minibatch would not fit in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Sequence as Seq

import numpy as np

from .grammar import Sequence


@dataclass(frozen=True)
class SparseBatch:
    """COO samples of one sparse stream: value ``values[k]`` sits at ``(rows[k], cols[k])``.

    rows (sample index in the batch) are non-decreasing. Duplicate (row, col) pairs add up when
    densified.
    """

    rows: np.ndarray  # int64 (nnz,)
    cols: np.ndarray  # int64 (nnz,)
    values: np.ndarray  # (nnz,) in the reader's dtype
    shape: tuple[int, int]  # (samples, dim)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, self.values.dtype)
        np.add.at(out, (self.rows, self.cols), self.values)
        return out

    def slice_rows(self, start: int, stop: int) -> "SparseBatch":
        lo, hi = np.searchsorted(self.rows, [start, stop])
        return SparseBatch(self.rows[lo:hi] - start, self.cols[lo:hi], self.values[lo:hi],
                           (stop - start, self.shape[1]))

    @staticmethod
    def concat(parts: Seq["SparseBatch"]) -> "SparseBatch":
        offsets = np.cumsum([0] + [p.shape[0] for p in parts])
        return SparseBatch(
            np.concatenate([p.rows + off for p, off in zip(parts, offsets)]).astype(np.int64),
            np.concatenate([p.cols for p in parts]).astype(np.int64),
            np.concatenate([p.values for p in parts]),
            (int(offsets[-1]), parts[0].shape[1]))


@dataclass
class CTFBatch:
    """B sequences: ``batch[name]`` is a dense (samples, dim) array (float32 by default) or a SparseBatch.

    sequence_ids: (B,) the id from the file, or the 0-based line index when lines have no ids.
    lines: (B,) 1-based line number where each sequence starts (for error messages downstream).
    lengths: per stream, (B,) samples in each sequence.
    """

    data: dict[str, np.ndarray | SparseBatch]
    sequence_ids: np.ndarray
    lines: np.ndarray
    lengths: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sequence_ids)

    def __getitem__(self, name: str) -> np.ndarray | SparseBatch:
        return self.data[name]

    def __contains__(self, name: object) -> bool:
        return name in self.data

    def keys(self):
        return self.data.keys()

    def items(self):
        return self.data.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def dense(self, name: str) -> np.ndarray:
        """The stream as a dense (samples, dim) array, densifying a sparse one."""
        value = self.data[name]
        return value.to_dense() if isinstance(value, SparseBatch) else value

    @cached_property
    def _sample_ends(self) -> dict[str, np.ndarray]:
        # computed once: minibatches() cuts one joined batch many times
        return {name: np.concatenate([[0], np.cumsum(n)]) for name, n in self.lengths.items()}

    def slice(self, start: int, stop: int) -> "CTFBatch":
        """Sequences ``start:stop`` (with all their samples)."""
        data = {}
        for name, value in self.data.items():
            ends = self._sample_ends[name]
            lo, hi = int(ends[start]), int(ends[stop])
            data[name] = value.slice_rows(lo, hi) if isinstance(value, SparseBatch) else value[lo:hi]
        return CTFBatch(data, self.sequence_ids[start:stop], self.lines[start:stop],
                        {k: v[start:stop] for k, v in self.lengths.items()})

    @staticmethod
    def concat(parts: Seq["CTFBatch"]) -> "CTFBatch":
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        data = {}
        for name, value in first.data.items():
            if isinstance(value, SparseBatch):
                data[name] = SparseBatch.concat([p.data[name] for p in parts])
            else:
                data[name] = np.concatenate([p.data[name] for p in parts])
        return CTFBatch(data, np.concatenate([p.sequence_ids for p in parts]),
                        np.concatenate([p.lines for p in parts]),
                        {k: np.concatenate([p.lengths[k] for p in parts]) for k in first.lengths})

    @staticmethod
    def empty(formats: dict[str, tuple[str, int]], dtype: type = np.float32) -> "CTFBatch":
        """A batch of no sequences with the given {name: (format, dim)}."""
        return from_sequences([], formats, dtype)


def from_sequences(seqs: list[Sequence], formats: dict[str, tuple[str, int]],
                   dtype: type = np.float32) -> CTFBatch:
    """Assemble parsed sequences (already checked) into a batch; formats: {name: (format, dim)}."""
    data: dict[str, np.ndarray | SparseBatch] = {}
    lengths = {}
    for name, (fmt, dim) in formats.items():
        samples = [s for seq in seqs for s in seq.samples[name]]
        lengths[name] = np.array([len(seq.samples[name]) for seq in seqs], np.int64)
        if fmt == "dense":
            data[name] = np.stack(samples).astype(dtype, copy=False) if samples else np.zeros((0, dim), dtype)
            continue
        nnz = [len(idx) for idx, _ in samples]
        data[name] = SparseBatch(
            np.repeat(np.arange(len(samples), dtype=np.int64), nnz),
            np.concatenate([idx for idx, _ in samples] or [np.zeros(0)]).astype(np.int64),
            np.concatenate([val for _, val in samples] or [np.zeros(0)]).astype(dtype),
            (len(samples), dim))
    ids = np.array([seq.seq_id for seq in seqs], np.int64)
    lines = np.array([seq.first_line for seq in seqs], np.int64)
    return CTFBatch(data, ids, lines, lengths)
