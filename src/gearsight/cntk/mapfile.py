"""CNTK's ImageDeserializer: a map file of images and labels, decoded lazily, transformed on the fly.

    ds = MapFileDataset("train_map.txt", transforms=pipeline_or_config, num_classes=10)
    for images, labels in ds.minibatches(128, shuffle=True, seed=0, workers=2, epoch=e):
        ...                      # images: NCHW uint8 (float32 after Mean), labels: int64
    ds.skipped                   # every undecodable image met so far: map line, path, reason

Map file lines (docs/MAPFILE.md): ``path<TAB>label`` or ``key<TAB>path<TAB>label``; a path starting
with ``...`` is relative to the map file's folder (CNTK's rule), other relative paths too (CNTK
used the working directory); ``archive.zip@/member`` reads from inside a zip; Windows ``\\``
separators in relative paths are read as ``/``. With ``base64=True`` (CNTK's
Base64ImageDeserializer) lines are ``[key<TAB>]label<TAB>base64 image``. A malformed line is a
ValueError naming the file and line; an image that cannot be read is skipped and reported.
"""
from __future__ import annotations

import base64 as b64
import binascii
import copy
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gearsight.cntk.transforms import Pipeline, sample_rng, stack_images, transforms_from_config
from gearsight.image.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image

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


@dataclass(frozen=True)
class Skipped:
    index: int   # entry index in the map file's order
    line: int
    source: str
    reason: str


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


def read_source_bytes(source: str, base64_text: bool = False) -> bytes:
    """The encoded image named by a resolved map-file source; DecodeError with the reason if unreadable."""
    name = "<base64>" if base64_text else source.replace(ZIP_SEP, "@")
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


class MapFileDataset(Dataset):
    """A torch Dataset over a CNTK map file: item i -> (CHW tensor, label), decoded when asked for.

    ``transforms``: a Pipeline, a list of Transforms or ``{type = ...}`` dicts, or CNTK config text
    (see cntk.transforms.transforms_from_config). With a MultiView10 crop every entry appears 10
    times in a row (one per view), as in CNTK. Random transforms draw from
    ``sample_rng(seed, index, epoch)``, so results do not depend on workers or batch order.
    ``__getitem__`` raises DecodeError (naming map file and line) for an unreadable image;
    ``minibatches`` skips those and records them in ``skipped``.
    """

    def __init__(self, map_file: str | os.PathLike, transforms: Any = None, *, base64: bool = False,
                 num_classes: int | None = None, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.map_file = Path(map_file)
        self.keys, self.sources, self.labels, self.lines = read_map_file(
            map_file, base64=base64, num_classes=num_classes)
        self.pipeline = transforms_from_config(transforms) if transforms is not None else Pipeline()
        self.base64, self.seed, self.epoch, self.max_pixels = base64, seed, 0, max_pixels
        self._skipped: dict[int, Skipped] = {}

    def __len__(self) -> int:
        return len(self.labels) * self.pipeline.copies

    def entry(self, index: int) -> MapEntry:
        """The map-file entry behind dataset item ``index``."""
        i = index // self.pipeline.copies
        source = "<base64>" if self.base64 else self.sources[i].replace(ZIP_SEP, "@")
        return MapEntry(int(self.lines[i]), self.keys[i], source, int(self.labels[i]))

    def decode(self, index: int) -> np.ndarray:
        """The untransformed HWC uint8 RGB image of item ``index``."""
        i = index // self.pipeline.copies
        try:
            data = read_source_bytes(self.sources[i], self.base64)
            return decode_image(data, max_pixels=self.max_pixels)
        except DecodeError as exc:
            entry = self.entry(index)
            raise DecodeError(f"{self.map_file}, line {entry.line}: {entry.source}", exc.reason) from None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image = self.decode(index)
        copies = self.pipeline.copies
        rng = sample_rng(self.seed, index, self.epoch)
        return self.pipeline(image, rng, view=index % copies), int(self.labels[index // copies])

    @property
    def skipped(self) -> list[Skipped]:
        """Every item ``minibatches`` could not decode so far, in index order (each listed once)."""
        return [self._skipped[i] for i in sorted(self._skipped)]

    def minibatches(self, batch_size: int, shuffle: bool = False, seed: int = 0, workers: int = 0, *,
                    epoch: int = 0, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass as (NCHW images, int64 labels) batches, decoded on ``workers`` processes.

        ``seed`` and ``epoch`` fix both the order (with ``shuffle``) and every random transform.
        A batch that lost undecodable images is smaller; they are added to ``skipped`` (once each)
        and a warning gives the pass's count at its end.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        view = copy.copy(self)  # the seed/epoch the workers see, without changing this object
        view.seed, view.epoch = seed, epoch
        order = (torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
                 if shuffle else torch.arange(len(self)))
        loader = DataLoader(_Guarded(view), batch_size=batch_size, sampler=order.tolist(), num_workers=workers,
                            collate_fn=_collate, drop_last=drop_last)
        failures = 0
        for images, labels, failed in loader:
            failures += len(failed)
            for skip in failed:
                self._skipped.setdefault(skip.index, skip)
            if images is not None:
                yield images, labels
        if failures:
            warnings.warn(f"{self.map_file}: skipped {failures} undecodable image(s) in this pass; "
                          "see .skipped for lines and reasons", stacklevel=2)


class _Guarded(Dataset):
    """Item -> (tensor, label, None) or (None, label, Skipped): a bad image must not kill a worker."""

    def __init__(self, ds: MapFileDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        try:
            image, label = self.ds[index]
            return image, label, None
        except DecodeError as exc:
            entry = self.ds.entry(index)
            return None, entry.label, Skipped(index, entry.line, entry.source, exc.reason)


def _collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[Skipped]]:
    good = [(image, label) for image, label, skip in items if skip is None]
    failed = [skip for _, _, skip in items if skip is not None]
    if not good:
        return None, torch.empty(0, dtype=torch.int64), failed
    return stack_images([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.int64), failed
