"""CNTK Text Format (CTF): stream declarations, errors, and the full-grammar line parser.

The grammar is CNTK's CNTKTextFormatReader (docs/CTF.md has the user-facing version):

    line    := [sequence_id] (ws* '|' (sample | '#' comment))* ws* ['\\r'] '\\n'
    sample  := name (ws+ value)* ws*       name: any run of non-whitespace, non-'|' characters
    comment := anything up to the next '|' (so '|#' inside a comment body simply starts a new comment)
    value   := number (dense stream) | uint ':' number (sparse stream)
    number  := [+-] digits ['.' [digits]] [(e|E) [+-] digits]

Like CNTK, '.5', '1.e5', 'inf', 'nan' and '2.0f' are not numbers, an empty line or a line holding only
comments is an error, and a dense sample with fewer values than the stream's dim is zero-padded (with
a warning). Unlike CNTK, which drops just the bad sample, a malformed line is rejected whole, so the
streams of a sequence never go out of step (see ``CTFReader(on_error=...)``).

This module is the reference parser, one line at a time; ``fast`` (compiled, a chunk at a time)
takes every line this one accepts without a warning and hands any other chunk back to this one.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

StreamFormat = Literal["dense", "sparse"]


@dataclass(frozen=True)
class StreamSpec:
    """One input stream, as a CNTK reader config declares it.

    dim: values per sample (dense) or the bound on indices (sparse); None = infer from the file.
    format: "dense" (a list of values) or "sparse" (``index:value`` pairs).
    alias: the name used after '|' in the file, when it differs from the stream's name.
    """

    dim: int | None = None
    format: StreamFormat = "dense"
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("dense", "sparse"):
            raise ValueError(f"stream format must be 'dense' or 'sparse', got {self.format!r}")
        if self.dim is not None and (not isinstance(self.dim, (int, np.integer)) or self.dim < 0):
            raise ValueError(f"stream dim must be a non-negative int, got {self.dim!r}")


class CTFIssue(NamedTuple):
    """A skipped line/sequence or a warning: 1-based line numbers and the reason."""

    line: int
    last_line: int
    reason: str

    def where(self) -> str:
        return f"line {self.line}" if self.line == self.last_line else f"lines {self.line}-{self.last_line}"


class CTFError(ValueError):
    """Malformed CTF input; the message names the file, the line(s) and the reason."""

    def __init__(self, path: str, line: int, reason: str, last_line: int | None = None):
        self.path, self.line, self.reason = str(path), line, reason
        self.last_line = line if last_line is None else last_line
        where = f"{line}" if self.last_line == line else f"{line}-{self.last_line}"
        super().__init__(f"{self.path}:{where}: {reason}")

    def __reduce__(self):  # picklable across processes (data-loader workers)
        return CTFError, (self.path, self.line, self.reason, self.last_line)


class LineError(Exception):
    """Raised by the line parser; the reader adds the file and line number."""


_NUM = rb"[+-]?+\d++(?:\.\d++(?:[eE][+-]?+\d++)?+|\.|[eE][+-]?+\d++)?+"
_PAIR = rb"\d++:" + _NUM
# One regex call validates a whole sparse sample; possessive quantifiers keep it linear.
_SPARSE_RE = re.compile(rb"[ \t]*+(?:" + _PAIR + rb"(?:[ \t]++" + _PAIR + rb")*+)?+[ \t]*+")
_NUM_RE = re.compile(_NUM)
_PAIR_RE = re.compile(_PAIR)
_ID_RE = re.compile(rb"\d+")
MAX_SEQUENCE_ID = 2 ** 63 - 1  # ids are int64 in a batch
_NAME_RE = re.compile(rb"[^ \t]*")
_SEP_RE = re.compile(rb"[ \t]+")
_WS = b" \t"
_CONTROL = bytes(range(32)) + b"\x7f"
# Dense values: checking them with a regex took as long as parsing them, so the bytes are checked
# with one translate() and the numbers parsed by strtod (np.fromstring). Restricted to these bytes,
# strtod accepts only one thing CNTK rejects: a '.' without a digit before it or with an exponent
# right after it ('.5', '-.5', '5.e3'), which _loose_dot finds.
_NUMBER_BYTES = b"0123456789+-.eE \t"


def _fromstring_raises() -> bool:
    """numpy 2.4 raises on text np.fromstring cannot parse; older numpy warned and stopped early."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            np.fromstring(b"1 x", dtype=np.float64, sep=" ")
        except ValueError:
            return True
    return False


_FROMSTRING_RAISES = _fromstring_raises()


def _strtod(text: bytes) -> np.ndarray:
    """Whitespace-separated numbers -> float64; ValueError unless all of the text parses."""
    if _FROMSTRING_RAISES:
        return np.fromstring(text, dtype=np.float64, sep=" ")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=np.float64, sep=" ")
        except DeprecationWarning as err:
            raise ValueError(str(err)) from None


def _loose_dot(text: bytes) -> bool:
    """A '.' not preceded by a digit, or followed by an exponent (numpy: 2x faster than a regex)."""
    if b"." not in text:
        return False
    a = np.frombuffer(b" " + text + b" ", np.uint8)
    dots = np.flatnonzero(a == ord("."))
    return bool(((a[dots - 1] - ord("0")) >= 10).any() or ((a[dots + 1] | 32) == ord("e")).any())


def _show(token: bytes, limit: int = 24) -> str:
    text = token.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def split_samples(line: bytes) -> tuple[int | None, list[tuple[bytes, bytes]]]:
    """Structure of one line (no trailing newline): the sequence id and (name, values text) pairs.

    Comments are dropped here. Raises LineError for a line with no samples or a broken '|name'.
    """
    if line.endswith(b"\r"):  # CRLF files
        line = line[:-1]
    m = _ID_RE.match(line)
    seq_id = int(m.group()) if m else None
    if seq_id is not None and seq_id > MAX_SEQUENCE_ID:
        raise LineError(f"sequence id {_show(m.group())} is too large (at most 2**63 - 1)")
    rest = line[m.end():] if m else line
    pieces = rest.split(b"|")
    head = pieces[0].strip(_WS)
    if head:
        raise LineError(f"expected '|' before {_show(head)}")
    samples: list[tuple[bytes, bytes]] = []
    for piece in pieces[1:]:
        if piece.startswith(b"#"):
            continue  # a comment runs to the next '|'
        name = _NAME_RE.match(piece).group()
        if not name:
            follower = "end of line" if not piece else repr(piece[:1].decode("latin-1"))
            raise LineError(f"'|' must be followed by a stream name, found {follower}")
        if name.translate(None, _CONTROL) != name:
            raise LineError(f"unexpected control character in stream name {_show(name)}")
        samples.append((name, piece[len(name):]))
    if not samples:
        if not rest.strip(_WS) and seq_id is None:
            raise LineError("empty line")
        raise LineError("no samples on the line" + (" (only comments)" if len(pieces) > 1 else ""))
    return seq_id, samples


def _tokens(text: bytes) -> list[bytes]:
    text = text.strip(_WS)
    return _SEP_RE.split(text) if text else []


def _not_a_number(text: bytes, name: str) -> LineError:
    bad = next((t for t in _tokens(text) if not _NUM_RE.fullmatch(t)), text.strip(_WS))
    return LineError(f"stream '{name}': {_show(bad)} is not a number")


def parse_dense(text: bytes, name: str) -> np.ndarray:
    """Values text of a dense sample -> float64 array (validated against CNTK's number syntax)."""
    if text.translate(None, _NUMBER_BYTES) or _loose_dot(text):
        raise _not_a_number(text, name)
    if not text.strip(_WS):
        return np.zeros(0, np.float64)
    try:
        return _strtod(text)
    except ValueError:
        raise _not_a_number(text, name) from None


def parse_sparse(text: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Values text of a sparse sample -> (indices, float64 values)."""
    if not _SPARSE_RE.fullmatch(text):
        bad = next((t for t in _tokens(text) if not _PAIR_RE.fullmatch(t)), text.strip(_WS))
        raise LineError(f"stream '{name}': {_show(bad)} is not an index:value pair")
    tokens = _tokens(text)
    if not tokens:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    pairs = [t.split(b":", 1) for t in tokens]
    indices = np.array([int(i) for i, _ in pairs], dtype=object)  # object: no overflow before the range check
    return indices, _strtod(b" ".join(v for _, v in pairs))


@dataclass
class BoundStream:
    """A declared stream: its name in the results and its spec (the parser keys it by file name)."""

    name: str
    spec: StreamSpec


@dataclass
class LineParser:
    """Parses lines against declared streams (keys: the name used in the file, i.e. alias or name)."""

    streams: dict[bytes, BoundStream]
    unknown_streams: Literal["error", "ignore"] = "error"
    short_dense: Literal["pad", "error"] = "pad"
    dtype: type = np.float32

    def parse(self, line: bytes, notes: list[str]) -> tuple[int | None, dict[str, object]]:
        """(sequence id or None, {stream name: sample}); tolerated oddities are appended to notes."""
        seq_id, raw = split_samples(line)
        samples: dict[str, object] = {}
        for file_name, text in raw:
            stream = self.streams.get(file_name)
            if stream is None:
                if self.unknown_streams == "ignore":
                    continue
                known = ", ".join(sorted(k.decode("utf-8", "replace") for k in self.streams))
                raise LineError(f"unknown stream {_show(file_name)} (declared: {known})")
            if stream.name in samples:
                raise LineError(f"stream '{stream.name}' appears twice on the line")
            samples[stream.name] = self._sample(stream, text, notes)
        if not samples:
            raise LineError("no samples of the declared streams on the line")
        return seq_id, samples

    def _sample(self, stream: BoundStream, text: bytes, notes: list[str]) -> object:
        name, dim = stream.name, stream.spec.dim
        assert dim is not None, "stream dims are resolved before parsing"
        if stream.spec.format == "sparse":
            indices, values = parse_sparse(text, name)
            if indices.size and indices.max() >= dim:
                raise LineError(f"stream '{name}': sparse index {indices.max()} out of range for dim {dim}")
            return indices.astype(np.int64), values.astype(self.dtype)
        values = parse_dense(text, name)
        if values.size > dim:
            raise LineError(f"stream '{name}' has {values.size} values, more than its dim {dim}")
        if values.size < dim:
            reason = f"stream '{name}' has {values.size} values, fewer than its dim {dim}"
            if self.short_dense == "error":
                raise LineError(reason)
            notes.append(reason + " (zero-padded, as CNTK does)")
            values = np.concatenate([values, np.zeros(dim - values.size)])
        return values.astype(self.dtype)


@dataclass
class Sequence:
    """Lines sharing a sequence id, with each stream's samples in line order."""

    seq_id: int
    first_line: int
    last_line: int
    samples: dict[str, list] = field(default_factory=dict)
    n_lines: int = 0

    def add(self, line_no: int, samples: dict[str, object]) -> None:
        for name, sample in samples.items():
            self.samples.setdefault(name, []).append(sample)
        self.last_line = line_no
        self.n_lines += 1

    def check(self, names: list[str]) -> None:
        """CNTK's per-sequence rules; raises LineError (the reader reports the line range)."""
        for name in names:
            if not self.samples.get(name):
                raise LineError(f"stream '{name}' has no sample in sequence {self.seq_id}")
        longest = max(len(s) for s in self.samples.values())
        if longest < self.n_lines:
            raise LineError(
                f"sequence {self.seq_id} spans {self.n_lines} lines but its longest stream has "
                f"{longest} samples (one stream must have a sample on every line)")
