"""Streaming CTF reader: a file of any size -> minibatches of per-stream numpy arrays.

The file is read in chunks of whole lines (``chunk_bytes``, 4 MiB by default), so memory stays
constant however large the file. Each chunk first goes to the compiled scanner (``fast``) and,
if that declines (a line it would have to reject or warn about), line by line through the full
grammar (``grammar``), the reference, which words the error. Sequences that span chunks are
carried over, whichever parser read them.

Errors: by default the first malformed line raises CTFError naming the file, line and reason. With
``on_error="skip"`` such a line (or a sequence breaking a per-sequence rule) is dropped, counted in
``skipped_count``, listed in ``skipped`` and logged; ``max_errors`` bounds how many may be skipped, as
CNTK's ``maxErrors`` does. Tolerated oddities (a short dense sample zero-padded, a missing final
newline) are kept in ``warnings``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Literal, Mapping

import numpy as np

from .batch import CTFBatch, from_sequences
from .fast import LineTable, Scratch, as_readonly, scan_chunk
from .grammar import (MAX_SEQUENCE_ID, BoundStream, CTFError, CTFIssue, LineError, LineParser, Sequence,
                          StreamSpec, parse_dense, parse_sparse, split_samples)
from .scan import count_lines

log = logging.getLogger("gearsight.cntk.ctf")

DEFAULT_CHUNK_BYTES = 4 << 20
_KEEP_ISSUES = 1000  # issues kept in .skipped / .warnings (all are counted)
_LOG_ISSUES = 10  # issues logged one by one before a summary
_BOM = b"\xef\xbb\xbf"


def _chunks(path: Path, chunk_bytes: int) -> Iterator[tuple[memoryview, int, int, bool]]:
    """(complete lines ending in '\\n', number of their first line, how many, final line lacked a newline).

    The lines are a view of one buffer that the next chunk overwrites (read into place: no copies
    and no fresh pages per chunk, measured a quarter of a float file's read time); the line parser
    takes bytes() of it."""
    with open(path, "rb") as f:
        buf = bytearray(chunk_bytes)
        end = f.readinto(buf)
        if buf[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise CTFError(path, 1, "UTF-16 text is not supported (CTF is ASCII/UTF-8)")
        begin = len(_BOM) if buf[:3] == _BOM else 0
        if end <= begin:
            raise CTFError(path, 1, "the file is empty")
        line_no = 1
        while end > begin:
            cut = buf.rfind(b"\n", begin, end) + 1
            if cut:
                lines = memoryview(buf)[begin:cut]
                count = count_lines(as_readonly(lines))
                yield lines, line_no, count, False
                line_no += count
            tail = bytes(buf[max(cut, begin):end])  # a line that goes on in the next read
            if len(tail) + chunk_bytes > len(buf):
                buf = bytearray(len(tail) + chunk_bytes)
            buf[:len(tail)] = tail
            begin, end = 0, len(tail) + f.readinto(memoryview(buf)[len(tail):len(tail) + chunk_bytes])
            if end == len(tail) and tail:
                yield memoryview(tail + b"\n"), line_no, 1, True
                return


def infer_streams(path: str | os.PathLike, max_lines: int = 1000,
                  names: set[str] | None = None) -> dict[str, StreamSpec]:
    """Streams named in the first ``max_lines`` lines: format from the values (``i:v`` -> sparse),
    dim from the longest dense sample or the largest sparse index + 1. Keys are the names in the file.

    names: only look at these streams (parsing 1000 CIFAR images to size a label stream is slow).
    Malformed lines are passed over here; the reader reports them.
    """
    wanted = None if names is None else {name.encode() for name in names}
    found: dict[bytes, tuple[str, int]] = {}
    seen_empty: set[bytes] = set()
    for n, (line, _) in enumerate(_lines(Path(path))):
        if n >= max_lines:
            break
        try:
            _, samples = split_samples(line)
        except LineError:
            continue
        for name, text in samples:
            if wanted is not None and name not in wanted:
                continue
            if not text.strip():
                seen_empty.add(name)
                continue
            fmt = "sparse" if b":" in text else "dense"
            try:
                size = len(parse_dense(text, "")) if fmt == "dense" else int(parse_sparse(text, "")[0].max()) + 1
            except LineError:
                continue  # the reader will report it
            old_fmt, old_size = found.get(name, (fmt, 0))
            if old_fmt != fmt:
                raise ValueError(f"{path}: stream {name.decode()!r} is dense on some lines and sparse "
                                 "on others")
            found[name] = (fmt, max(old_size, size))
    for name in seen_empty - set(found):
        raise ValueError(f"{path}: every sample of stream {name.decode()!r} in the first {max_lines} "
                         "lines is empty, so its format and dim cannot be inferred; declare it")
    if not found:
        which = "" if names is None else f" of stream(s) {sorted(names)}"
        raise ValueError(f"{path}: no well-formed samples{which} in the first {max_lines} lines")
    return {name.decode(): StreamSpec(dim, fmt) for name, (fmt, dim) in found.items()}


def _lines(path: Path) -> Iterator[tuple[bytes, int]]:
    for buf, first, _, _ in _chunks(path, DEFAULT_CHUNK_BYTES):
        for i, line in enumerate(bytes(buf).split(b"\n")[:-1]):
            yield line, first + i


def _resolve(path: Path, streams: Mapping[str, StreamSpec] | None, infer_lines: int) -> dict[str, StreamSpec]:
    """Declared streams with every dim filled in (inferring what is missing)."""
    if streams is not None:
        for name, spec in streams.items():
            if not isinstance(spec, StreamSpec):
                raise TypeError(f"stream {name!r}: expected a StreamSpec, got {spec!r}")
        in_file = [spec.alias or name for name, spec in streams.items()]
        if len(set(in_file)) != len(in_file):
            raise ValueError(f"two streams share a name in the file: {sorted(in_file)}")
    if streams is not None and all(spec.dim is not None for spec in streams.values()):
        return dict(streams)
    found = infer_streams(path, infer_lines)
    if streams is None:
        return found
    resolved = {}
    for name, spec in streams.items():
        if spec.dim is None:
            key = spec.alias or name
            if key not in found:
                raise ValueError(f"{path}: stream {key!r} is not in the first {infer_lines} lines; "
                                 "declare its dim")
            if found[key].format != spec.format:
                raise ValueError(f"{path}: stream {key!r} is declared {spec.format} but its values are "
                                 f"{found[key].format}")
            spec = StreamSpec(found[key].dim, spec.format, spec.alias)
        resolved[name] = spec
    return resolved


class CTFReader:
    """Streaming reader of one CTF file.

    streams: {name: StreamSpec}; None infers every stream from the first ``infer_lines`` lines, and a
        spec with ``dim=None`` infers just that dim.
    skip_sequence_ids: treat every line as its own sequence even if it starts with an id (CNTK's
        ``skipSequenceIds``). Ids are also ignored when the file's first line has none, as in CNTK.
    on_error: "raise" (default) or "skip" malformed lines; max_errors: most lines to skip, None = any.
    unknown_streams: "error" (default) on a stream not declared, or "ignore" it as CNTK does.
    short_dense: "pad" a dense sample with fewer values than dim with zeros (CNTK, with a warning)
        or "error".
    dtype: of the values (float32; float64 keeps what float32 cannot, as CNTK's precision="double").
    vectorized: False forces the line-by-line parser (the reference: for testing and benchmarking).

    One pass at a time: ``skipped``, ``warnings`` and ``chunk_stats`` describe the latest pass.
    """

    def __init__(self, path: str | os.PathLike, streams: Mapping[str, StreamSpec] | None = None, *,
                 skip_sequence_ids: bool = False, on_error: Literal["raise", "skip"] = "raise",
                 max_errors: int | None = None, unknown_streams: Literal["error", "ignore"] = "error",
                 short_dense: Literal["pad", "error"] = "pad", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 infer_lines: int = 1000, dtype: type = np.float32, vectorized: bool = True):
        for option, value, allowed in (("on_error", on_error, ("raise", "skip")),
                                       ("unknown_streams", unknown_streams, ("error", "ignore")),
                                       ("short_dense", short_dense, ("pad", "error"))):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {value!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"CTF file not found: {self.path}")
        self.streams = _resolve(self.path, streams, infer_lines)
        table = {(spec.alias or name).encode(): BoundStream(name, spec) for name, spec in self.streams.items()}
        self.dtype = np.dtype(dtype).type
        self._parser = LineParser(table, unknown_streams, short_dense, self.dtype)
        self.skip_sequence_ids, self.on_error, self.max_errors = skip_sequence_ids, on_error, max_errors
        self.chunk_bytes, self.vectorized = max(1, int(chunk_bytes)), vectorized
        self._reset()

    # -- public API -----------------------------------------------------------------------------

    def minibatches(self, batch_size: int, *, drop_last: bool = False) -> Iterator[CTFBatch]:
        """Batches of ``batch_size`` sequences in file order (the last one smaller unless drop_last)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        carry: list[CTFBatch] = []  # the start of a batch that goes on in the next block
        held = 0
        for block in self.blocks():
            start = 0
            if held:
                start = min(batch_size - held, len(block))
                carry.append(block.slice(0, start))
                held += start
                if held < batch_size:
                    continue
                yield CTFBatch.concat(carry)  # only batches that span blocks are copied
                carry, held = [], 0
            while len(block) - start >= batch_size:
                yield block.slice(start, start + batch_size)
                start += batch_size
            if start < len(block):
                carry, held = [block.slice(start, len(block))], len(block) - start
        if carry and not drop_last:
            yield CTFBatch.concat(carry)

    def read_all(self) -> CTFBatch:
        """Every sequence of the file in one batch."""
        blocks = list(self.blocks())
        return CTFBatch.concat(blocks) if blocks else from_sequences([], self._formats(), self.dtype)

    def blocks(self) -> Iterator[CTFBatch]:
        """One batch per chunk of the file (sizes vary); ``minibatches`` re-cuts these."""
        self._reset()
        line_mode = None
        for buf, first_line, n_lines, no_newline in _chunks(self.path, self.chunk_bytes):
            if line_mode is None:
                line_mode = self.skip_sequence_ids or self._first_line_mode(bytes(buf[:12]))
            if no_newline:
                self._warn(first_line + n_lines - 1, "the last line has no trailing newline")
            fast = self._parse_fast(buf, first_line, n_lines, line_mode) if self.vectorized else None
            block = fast if fast is not None else self._parse_lines(bytes(buf), first_line, line_mode)
            self.chunk_stats["vectorized" if fast is not None else "line_by_line"] += 1
            if len(block):
                yield block
        tail = self._close_sequence([])
        if tail:
            yield from_sequences(tail, self._formats(), self.dtype)
        self._summarise()

    def count_sequences(self) -> int:
        """Sequences in the file, from a scan of ids only (an upper bound when lines get skipped)."""
        count, previous, line_mode = 0, None, None
        for line, line_no in _lines(self.path):
            if line_mode is None:
                line_mode = self.skip_sequence_ids or self._first_line_mode(line + b"\n")
            digits = line[: len(line) - len(line.lstrip(b"0123456789"))]
            if line_mode or (digits and digits != previous):
                count, previous = count + 1, digits
        return count

    # -- internals ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.skipped: list[CTFIssue] = []
        self.warnings: list[CTFIssue] = []
        self.skipped_count = self.warning_count = 0
        self.chunk_stats = {"vectorized": 0, "line_by_line": 0}  # how each chunk was parsed
        self._scratch = Scratch()  # the fast path's work arrays, for this pass
        self._open: Sequence | None = None

    def _formats(self) -> dict[str, tuple[str, int]]:
        return {name: (spec.format, spec.dim) for name, spec in self.streams.items()}

    def _first_line_mode(self, buf: bytes) -> bool:
        """True: lines are sequences (first line has no id). CNTK decides this from the first byte."""
        if buf[:1] == b"|":
            return True
        if buf[:1].isdigit():
            return False
        raise CTFError(self.path, 1, "a line must start with a sequence id or '|', found "
                                     f"{buf[:12].decode('utf-8', 'replace')!r}")

    def _parse_fast(self, buf: memoryview, first_line: int, n_lines: int, line_mode: bool) -> CTFBatch | None:
        """The chunk through the compiled scanner, cut into the same sequences as ``_parse_lines``
        would; None (nothing changed) leaves the chunk to the line parser."""
        table = scan_chunk(buf, n_lines, self._parser, first_line, self._scratch)
        if table is None:
            return None
        n = len(table)
        if line_mode:  # every line a sequence, its id the line index
            starts = np.arange(n)
            return table.batch(starts, n, first_line - 1 + starts) if table.sequences_hold(starts, n) else None
        starts, ids = self._sequence_starts(table)
        stop = int(starts[-1]) if starts.size else n
        if not table.sequences_hold(starts[:-1], stop):
            return None
        for k in range(int(starts[0]) if starts.size else n):  # lines continuing the open sequence
            self._open.add(first_line + k, table.samples(k))
        if not starts.size:
            return CTFBatch.empty(self._formats(), self.dtype)
        done = self._close_sequence([])
        block = table.batch(starts[:-1], stop, ids[:-1])
        self._open = Sequence(int(ids[-1]), first_line + stop, first_line + stop)
        for k in range(stop, n):  # the last sequence stays open: the next chunk may continue it
            self._open.add(first_line + k, table.samples(k))
        return CTFBatch.concat([from_sequences(done, self._formats(), self.dtype), block]) if done else block

    def _sequence_starts(self, table: LineTable) -> tuple[np.ndarray, np.ndarray]:
        """Lines of the table that start a sequence, and the sequences' ids (``_parse_lines``' rule:
        a line starts one when its id differs from the open sequence's, or when none is open)."""
        seq, n = table.seq, len(table)
        has = seq >= 0
        if self._open is not None:
            current = self._open.seq_id
        else:
            current = int(seq[0]) if has[0] else table.first_line - 1
        last_id_at = np.maximum.accumulate(np.where(has, np.arange(n), -1))
        sequence_of = np.where(last_id_at >= 0, seq[np.maximum(last_id_at, 0)], current)
        new = has & (seq != np.concatenate([[current], sequence_of[:-1]]))
        new[0] |= self._open is None
        starts = np.flatnonzero(new)
        return starts, np.where(has[starts], seq[starts], table.first_line - 1 + starts)

    def _parse_lines(self, buf: bytes, first_line: int, line_mode: bool) -> CTFBatch:
        done: list[Sequence] = []
        for line_no, line in enumerate(buf.split(b"\n")[:-1], first_line):
            notes: list[str] = []
            try:
                seq_id, samples = self._parser.parse(line, notes)
            except LineError as err:
                self._fail(line_no, line_no, str(err))
                if not line_mode:  # a rejected line still starts a new sequence if its id is new
                    self._follow_id(line, line_no, done)
                continue
            for note in notes:
                self._warn(line_no, note)
            if line_mode:
                seq = Sequence(line_no - 1, line_no, line_no)
                seq.add(line_no, samples)
                self._check(seq, done)
                continue
            if self._open is None or (seq_id is not None and seq_id != self._open.seq_id):
                self._close_sequence(done)
                self._open = Sequence(line_no - 1 if seq_id is None else seq_id, line_no, line_no)
            self._open.add(line_no, samples)
        return from_sequences(done, self._formats(), self.dtype)

    def _follow_id(self, line: bytes, line_no: int, done: list[Sequence]) -> None:
        digits = line[: len(line) - len(line.lstrip(b"0123456789"))]
        if digits and (self._open is None or int(digits) != self._open.seq_id):
            self._close_sequence(done)
            if int(digits) <= MAX_SEQUENCE_ID:  # past int64 (the line's own error) it names nothing: the lines
                self._open = Sequence(int(digits), line_no, line_no)  # after it open their own sequence

    def _close_sequence(self, done: list[Sequence]) -> list[Sequence]:
        if self._open is not None and self._open.n_lines:
            self._check(self._open, done)
        self._open = None
        return done

    def _check(self, seq: Sequence, done: list[Sequence]) -> None:
        try:
            seq.check(list(self.streams))
        except LineError as err:
            self._fail(seq.first_line, seq.last_line, str(err))
            return
        done.append(seq)

    def _fail(self, line: int, last_line: int, reason: str) -> None:
        if self.on_error == "raise":
            raise CTFError(self.path, line, reason, last_line)
        self.skipped_count += 1
        issue = CTFIssue(line, last_line, reason)
        if len(self.skipped) < _KEEP_ISSUES:
            self.skipped.append(issue)
        if self.skipped_count <= _LOG_ISSUES:
            log.warning("%s: skipped %s: %s", self.path, issue.where(), reason)
        if self.max_errors is not None and self.skipped_count > self.max_errors:
            raise CTFError(self.path, line, f"{reason} (more than max_errors={self.max_errors} "
                                            "malformed lines)", last_line)

    def _warn(self, line: int, reason: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < _KEEP_ISSUES:
            self.warnings.append(CTFIssue(line, line, reason))
        if self.warning_count <= _LOG_ISSUES:
            log.warning("%s:%d: %s", self.path, line, reason)

    def _summarise(self) -> None:
        if self.skipped_count > _LOG_ISSUES or self.warning_count > _LOG_ISSUES:
            log.warning("%s: skipped %d malformed lines/sequences, %d warnings (see CTFReader.skipped "
                        "and .warnings)", self.path, self.skipped_count, self.warning_count)
