"""The packed on-disk format: decode every image once, store uint8 pixels ready for training.

A packed dataset is a folder (format described in docs/FORMATS.md):
    images.npy   uint8 (N, S, S, 3), RGB, NHWC: memory-mappable with ``np.load(mmap_mode="r")``
    labels.npy   int64 (N,) class index into meta["classes"]
    splits.npy   uint8 (N,) index into meta["splits"] = ["train", "val", "test"]
    meta.json    classes, size, resize mode, counts, and per-item provenance (source path, sha256);
                 plus every skipped file with its reason

Why uint8 NHWC: decoding + resizing JPEGs costs ~2 ms an image, far more than a training step's
share; doing it once makes an epoch a memory copy. uint8 is 4x smaller than fp32 and the batched
augmentation (transforms.py) works on it directly. NHWC permuted to NCHW is exactly PyTorch's
channels_last layout, so no copy is needed before the first conv.

Deterministic: same input -> byte-identical folder (sorted records, no timestamps, sorted JSON).
``PackWriter`` is the format's one writer (``pack`` here, ``cifar.write_packed_cifar``) and
``PackedDataset`` its one reader; every file is written atomically, meta.json last.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from gearsight.cntk.mapfile import ZIP_SEP, display_source, read_source_bytes
from gearsight.data.sources import SPLITS, Record, class_names
from gearsight.files import atomic_write, atomic_write_text
from gearsight.image.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from gearsight.image.resize import fit_square

FORMAT = "gearsight-pack"  # data.inputs recognises a pack by it (spelt out there: inputs imports nothing)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PackOptions:
    size: int = 64
    resize: str = "pad"
    fill: int = 255
    max_pixels: int = DEFAULT_MAX_PIXELS


def read_and_decode(source: str | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray | None, str, str]:
    """A file path or its bytes -> (RGB pixels or None, sha256 of the bytes, reason or '').

    The shared worker step of every packer: one bad file becomes a reason, never an exception.
    """
    if isinstance(source, str) and ZIP_SEP in source:  # a map file's archive.zip@member
        try:
            source = read_source_bytes(source)
        except DecodeError as exc:
            return None, "", exc.reason
    elif isinstance(source, str):
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            return None, "", f"cannot read file ({exc.strerror or exc})"
    digest = hashlib.sha256(source).hexdigest()
    try:
        return decode_image(source, max_pixels=max_pixels), digest, ""
    except DecodeError as exc:
        return None, digest, exc.reason


def _decode_one(job: tuple[str | bytes, PackOptions]) -> tuple[np.ndarray | None, str, str]:
    """Worker: file (path or bytes) -> (resized pixels or None, sha256, error reason or '')."""
    path, opts = job
    rgb, digest, reason = read_and_decode(path, opts.max_pixels)
    if rgb is None:
        return None, digest, reason
    return fit_square(rgb, opts.size, opts.resize, opts.fill), digest, ""


def default_workers() -> int:
    """Decode processes when the caller names none: 2, or 1 on a one-core machine.

    What pack and cifar have always used (``pack --workers`` help said "all cores"; it now says this).
    Two is the box this runs on beside training jobs; on the 2-core machine 2 processes took the CIFAR
    tar from 19.5 to 14.2 s wall (docs/BENCHMARKS.md, CIFAR loading). On a bigger machine pass more.
    """
    return min(2, os.cpu_count() or 1)


def imap_workers(fn: Callable, jobs: Iterable, workers: int | None = None, chunksize: int = 16) -> Iterator:
    """``map(fn, jobs)`` in order, on ``workers`` forked processes (None: ``default_workers()``; 1: this
    process). The one worker pool of packing (pack, cifar); the pool ends when the iterator does.

    fork, not spawn: spawn re-runs an unguarded user script in every worker. The workers only touch
    Pillow and numpy, never torch's thread pools, which is what makes fork unsafe.
    """
    workers = workers or default_workers()
    if workers <= 1:
        yield from map(fn, jobs)
        return
    pool = get_context("fork").Pool(workers)
    try:
        yield from pool.imap(fn, jobs, chunksize=chunksize)
    finally:
        pool.terminate()


def _decoded(records: list[Record], opts: PackOptions, workers: int | None, progress: bool):
    """Yield (record, pixels, sha256, reason) in record order, decoding on ``workers`` processes."""
    from tqdm import tqdm

    jobs = [(r.path if r.data is None else r.data, opts) for r in records]
    with tqdm(total=len(jobs), desc="pack", unit="img", disable=not progress, smoothing=0.1) as bar:
        for record, (pixels, digest, reason) in zip(records, imap_workers(_decode_one, jobs, workers)):
            bar.update(1)
            yield record, pixels, digest, reason


def pack(records: list[Record], out_dir: str | Path, opts: PackOptions = PackOptions(),
         workers: int | None = None, progress: bool = True) -> dict:
    """Decode, resize and write ``records`` to ``out_dir``; returns the meta dict.

    Files that cannot be decoded are skipped and listed with their reason in meta["skipped"].
    ``workers``: decode processes (None: ``default_workers()``).
    """
    if any(r.split is None for r in records):
        raise ValueError("every record needs a split; call sources.stratified_split first")
    classes = class_names(records)
    class_index = {c: i for i, c in enumerate(classes)}
    writer = PackWriter(out_dir, len(records), opts.size)
    skipped = []
    try:
        for record, pixels, digest, reason in _decoded(records, opts, workers, progress):
            if pixels is None:
                skipped.append({"path": display_source(record.path), "reason": reason, "sha256": digest})
                continue
            writer.add(pixels, class_index[record.label], SPLITS.index(record.split),
                       {"path": display_source(record.path), "sha256": digest, "label": record.label,
                        "split": record.split})
    except BaseException:
        writer.abort()
        raise
    return writer.finish(classes, opts.resize, opts.fill, skipped)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, array)

    atomic_write(path, write)


class PackWriter:
    """The one writer of the packed format (``pack`` and ``cifar.write_packed_cifar`` write through it).

    Rows go straight into a preallocated ``images.npy.tmp`` (no second copy of the pixels in RAM);
    ``finish`` removes meta.json, renames the arrays into place (each written atomically) and writes
    meta.json last, so a folder with a meta.json holds one whole pack (data.inputs looks for it). A run
    that fails before ``finish`` leaves an older pack in ``out_dir`` as it was (``abort``).
    """

    def __init__(self, out_dir: str | Path, capacity: int, size: int):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self._tmp = self.out_dir / "images.npy.tmp"
        self.images = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.uint8,
                                                shape=(capacity, size, size, 3))
        self._labels: list[np.ndarray] = []
        self._splits: list[np.ndarray] = []
        self.items: list[dict] = []

    def add(self, pixels: np.ndarray, label: int, split: int, item: dict) -> None:
        """One row: ``pixels`` (size, size, 3) uint8, class index, index into SPLITS, provenance item."""
        self.images[len(self.items)] = pixels
        self._labels.append(np.array([label], np.int64))
        self._splits.append(np.array([split], np.uint8))
        self.items.append(item)

    def add_rows(self, images: np.ndarray, labels: np.ndarray, splits: np.ndarray, items: list[dict]) -> None:
        """Many rows at once (as ``add``, arrays of one length)."""
        n = len(self.items)
        self.images[n:n + len(images)] = images
        self._labels.append(np.asarray(labels, np.int64))
        self._splits.append(np.asarray(splits, np.uint8))
        self.items += items

    def finish(self, classes: list[str], resize: str, fill: int, skipped: list[dict],
               extra: dict | None = None, read: int | None = None) -> dict:
        """Write the folder; returns its meta. ``read``: files read (default: rows + skipped);
        ``extra``: more meta.json keys (e.g. CIFAR's ``source``)."""
        n_kept = len(self.items)
        self.images.flush()
        del self.images
        (self.out_dir / "meta.json").unlink(missing_ok=True)
        self._finish_images(n_kept)
        labels = np.concatenate([np.zeros(0, np.int64), *self._labels])
        splits = np.concatenate([np.zeros(0, np.uint8), *self._splits])
        _save_npy(self.out_dir / "labels.npy", labels)
        _save_npy(self.out_dir / "splits.npy", splits)
        meta = {
            **(extra or {}),
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "size": self.size, "resize": resize, "fill": fill, "layout": "NHWC uint8 RGB",
            "classes": list(classes), "splits": list(SPLITS),
            "counts": {"read": n_kept + len(skipped) if read is None else read, "packed": n_kept,
                       "skipped": len(skipped),
                       **{f"packed_{sp}": int((splits == i).sum()) for i, sp in enumerate(SPLITS)}},
            "items": self.items, "skipped": list(skipped),
        }
        atomic_write_text(self.out_dir / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return meta

    def abort(self) -> None:
        """Drop the temporary array (what is in ``out_dir`` already stays)."""
        self.__dict__.pop("images", None)
        self._tmp.unlink(missing_ok=True)

    def _finish_images(self, n_kept: int) -> None:
        """Rename the array into place, shrunk to the kept rows (skips leave unused rows at the end)."""
        final = self.out_dir / "images.npy"
        full = np.load(self._tmp, mmap_mode="r")
        if n_kept == full.shape[0]:
            del full
            os.replace(self._tmp, final)
            return
        shrunk = self.out_dir / "images.npy.tmp2"
        out = np.lib.format.open_memmap(shrunk, mode="w+", dtype=np.uint8, shape=(n_kept, self.size, self.size, 3))
        out[:] = full[:n_kept]
        out.flush()
        del out, full
        os.replace(shrunk, final)
        self._tmp.unlink()


class PackedDataset:
    """Read side of the packed format. ``images`` is a read-only memory map."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.root}: not a packed dataset (no meta.json); run `gearsight pack` first")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format is {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.images = np.load(self.root / "images.npy", mmap_mode="r")
        self.labels = np.load(self.root / "labels.npy")
        self.splits = np.load(self.root / "splits.npy")
        if not (len(self.images) == len(self.labels) == len(self.splits) == len(self.meta["items"])):
            raise ValueError(f"{self.root}: images, labels, splits and meta.json disagree on the item count")

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def size(self) -> int:
        return self.meta["size"]

    def indices(self, split: str) -> np.ndarray:
        if split not in self.meta["splits"]:
            raise ValueError(f"unknown split {split!r}; this dataset has {self.meta['splits']}")
        return np.flatnonzero(self.splits == self.meta["splits"].index(split))

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images NHWC uint8 copied into RAM, labels) of one split."""
        return self.take(self.indices(split))

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images NHWC uint8 copied into RAM, labels) of the rows ``idx``, e.g. two splits' indices."""
        return np.ascontiguousarray(self.images[idx]), self.labels[idx]

    def paths(self, split: str) -> list[str]:
        return [self.meta["items"][i]["path"] for i in self.indices(split)]

    def __len__(self) -> int:
        return len(self.labels)
