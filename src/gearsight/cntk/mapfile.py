"""Map files, CNTK's image list: the one parser, used by ``pack`` (data/sources.py) and by training
(cntk/dataset.py's MapFileDataset), so both accept exactly the same files. Torch-free.

    keys, sources, labels, lines = read_map_file("train_map.txt")   # errors name file and line
    read_source_bytes(sources[0])                                   # the encoded image, file or zip member

Map file lines (docs/MAPFILE.md): ``path<TAB>label`` or ``key<TAB>path<TAB>label``; a path starting
with ``...`` is relative to the map file's folder (CNTK's rule), other relative paths too (CNTK
used the working directory); ``archive.zip@/member`` reads from inside a zip; Windows ``\\``
separators in relative paths are read as ``/``; a UTF-8 byte-order mark is ignored. With
``base64=True`` (CNTK's Base64ImageDeserializer) lines are ``[key<TAB>]label<TAB>base64 image``. A
malformed line is a ValueError naming the file and line.
"""
from __future__ import annotations

import base64 as b64
import binascii
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gearsight.image.decode import DecodeError

ZIP_SEP = "\0"  # between archive and member in a stored source: NUL cannot occur in a path


class _Strings:
    """Many strings as one UTF-8 buffer + offsets: two numpy arrays instead of a million Python
    objects, so DataLoader workers forked from the parent do not copy them page by page as they
    touch reference counts (the copy-on-read growth of pytorch/pytorch#13246)."""

    def __init__(self, items: list[str]):
        encoded = [s.encode("utf-8") for s in items]
        self.offsets = np.cumsum([0] + [len(b) for b in encoded], dtype=np.int64)
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")


@dataclass(frozen=True)
class MapEntry:
    line: int    # 1-based line in the map file
    key: str     # the sequence key column, "" when the line has none
    source: str  # resolved path, "archive" + ZIP_SEP + "member", or base64 text
    label: int


def _resolve(path: str, base: Path) -> str:
    """A map-file path -> absolute path, or archive + ZIP_SEP + member for ``x.zip@/member``."""
    if os.sep == "/" and "\\" in path and not (len(path) > 1 and path[1] == ":"):
        path = path.replace("\\", "/")  # written on Windows; a drive path (C:\...) cannot resolve here anyway
    if path.startswith("..."):
        path = str(base) + path[3:]
    archive, sep, member = path.partition(".zip@")
    if sep:
        return str(base / (archive + ".zip")) + ZIP_SEP + member.lstrip("/\\")
    return str(base / path)  # an absolute path stays as it is


def _parse_line(text: str, base: Path, b64_mode: bool, where: str) -> tuple[str, str, str]:
    """(key, source, label text) from one line, or ValueError naming ``where``."""
    parts = text.split("\t")
    if len(parts) not in (2, 3):
        form = "[key<TAB>]label<TAB>base64" if b64_mode else "path<TAB>label or key<TAB>path<TAB>label"
        raise ValueError(f"{where}: expected {form}, got {len(parts)} tab-separated field(s): {text[:80]!r}")
    key = parts[0].strip() if len(parts) == 3 else ""
    if b64_mode:
        return key, parts[-1].strip(), parts[-2].strip()
    path = parts[-2].strip()
    if not path:
        raise ValueError(f"{where}: empty image path")
    return key, _resolve(path, base), parts[-1].strip()


def read_map_file(map_file: str | os.PathLike, *, base64: bool = False,
                  num_classes: int | None = None) -> tuple[_Strings, _Strings, np.ndarray, np.ndarray]:
    """Parse a map file -> (keys, sources, labels int64, line numbers); errors name file and line."""
    map_file = Path(map_file)
    base = map_file.resolve().parent
    keys, sources, labels, lines = [], [], [], []
    with open(map_file, encoding="utf-8-sig") as f:  # -sig: a BOM from Windows editors is not a path
        for lineno, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            where = f"{map_file}, line {lineno}"
            key, source, label = _parse_line(text, base, base64, where)
            if not (label.isascii() and label.isdigit()):
                raise ValueError(f"{where}: label {label!r} is not a non-negative integer")
            if num_classes is not None and int(label) >= num_classes:
                raise ValueError(f"{where}: label {label} is out of range for num_classes={num_classes} (labelDim)")
            keys.append(key)
            sources.append(source)
            labels.append(int(label))
            lines.append(lineno)
    if not sources:
        raise ValueError(f"{map_file}: no entries")
    return _Strings(keys), _Strings(sources), np.asarray(labels, np.int64), np.asarray(lines, np.int64)


_zip_cache: dict[str, tuple[int, zipfile.ZipFile]] = {}


def _zip_member(archive: str, member: str) -> bytes:
    """Read one member; archives stay open per process (a forked worker reopens its own handle,
    since a file offset shared with the parent would interleave reads)."""
    pid, zf = _zip_cache.get(archive, (None, None))
    if pid != os.getpid():
        zf = zipfile.ZipFile(archive)
        _zip_cache[archive] = (os.getpid(), zf)
    return zf.read(member)


def display_source(source: str) -> str:
    """A resolved source as people write it: ``archive.zip@member`` for a zip member, else the path."""
    return source.replace(ZIP_SEP, "@")


def read_source_bytes(source: str, base64_text: bool = False) -> bytes:
    """The encoded image named by a resolved map-file source; DecodeError with the reason if unreadable."""
    name = "<base64>" if base64_text else display_source(source)
    try:
        if base64_text:
            return b64.b64decode(source, validate=True)
        archive, sep, member = source.partition(ZIP_SEP)
        return _zip_member(archive, member) if sep else Path(source).read_bytes()
    except FileNotFoundError:
        raise DecodeError(name, "file not found") from None
    except KeyError:
        raise DecodeError(name, "no such member in the zip archive") from None
    except binascii.Error as exc:
        raise DecodeError(name, f"invalid base64 ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - OSError, BadZipFile, zlib.error, an encrypted member, ...
        raise DecodeError(name, f"cannot read ({type(exc).__name__}: {exc})") from None
