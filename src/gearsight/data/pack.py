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
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from gearsight.cntk.mapfile import ZIP_SEP, display_source, read_source_bytes
from gearsight.data.sources import SPLITS, Record, class_names
from gearsight.image.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from gearsight.image.resize import fit_square

FORMAT = "gearsight-pack"
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


def _decoded(records: list[Record], opts: PackOptions, workers: int, progress: bool):
    """Yield (record, pixels, sha256, reason) in record order, decoding on ``workers`` processes."""
    from tqdm import tqdm

    jobs = [(r.path if r.data is None else r.data, opts) for r in records]
    bar = tqdm(total=len(jobs), desc="pack", unit="img", disable=not progress, smoothing=0.1)
    if workers <= 1:
        results = map(_decode_one, jobs)
        pool = None
    else:
        # fork, not spawn: spawn re-runs an unguarded user script in every worker. The workers only
        # touch Pillow and numpy, never torch's thread pools, which is what makes fork unsafe.
        pool = get_context("fork").Pool(workers)
        results = pool.imap(_decode_one, jobs, chunksize=16)
    try:
        for record, (pixels, digest, reason) in zip(records, results):
            bar.update(1)
            yield record, pixels, digest, reason
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


def pack(records: list[Record], out_dir: str | Path, opts: PackOptions = PackOptions(),
         workers: int | None = None, progress: bool = True) -> dict:
    """Decode, resize and write ``records`` to ``out_dir``; returns the meta dict.

    Files that cannot be decoded are skipped and listed with their reason in meta["skipped"].
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(r.split is None for r in records):
        raise ValueError("every record needs a split; call sources.stratified_split first")
    classes = class_names(records)
    class_index = {c: i for i, c in enumerate(classes)}
    workers = workers or min(2, os.cpu_count() or 1)

    n, s = len(records), opts.size
    tmp_images = out_dir / "images.npy.tmp"
    images = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=(n, s, s, 3))
    labels, splits, items, skipped = [], [], [], []
    for record, pixels, digest, reason in _decoded(records, opts, workers, progress):
        if pixels is None:
            skipped.append({"path": display_source(record.path), "reason": reason, "sha256": digest})
            continue
        images[len(items)] = pixels
        labels.append(class_index[record.label])
        splits.append(SPLITS.index(record.split))
        items.append({"path": display_source(record.path), "sha256": digest, "label": record.label,
                      "split": record.split})
    images.flush()
    del images
    _finish_images(tmp_images, out_dir / "images.npy", len(items), s)

    np.save(out_dir / "labels.npy", np.asarray(labels, dtype=np.int64))
    np.save(out_dir / "splits.npy", np.asarray(splits, dtype=np.uint8))
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "size": s, "resize": opts.resize, "fill": opts.fill, "layout": "NHWC uint8 RGB",
        "classes": classes, "splits": list(SPLITS),
        "counts": {"read": n, "packed": len(items), "skipped": len(skipped),
                   **{f"packed_{sp}": splits.count(i) for i, sp in enumerate(SPLITS)}},
        "items": items, "skipped": skipped,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def _finish_images(tmp: Path, final: Path, n_kept: int, size: int) -> None:
    """Shrink the preallocated array to the kept rows (skips leave unused rows at the end)."""
    full = np.load(tmp, mmap_mode="r")
    if n_kept == full.shape[0]:
        del full
        os.replace(tmp, final)
        return
    out = np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8, shape=(n_kept, size, size, 3))
    out[:] = full[:n_kept]
    out.flush()
    del out, full
    tmp.unlink()


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
        idx = self.indices(split)
        return np.ascontiguousarray(self.images[idx]), self.labels[idx]

    def paths(self, split: str) -> list[str]:
        return [self.meta["items"][i]["path"] for i in self.indices(split)]

    def __len__(self) -> int:
        return len(self.labels)
