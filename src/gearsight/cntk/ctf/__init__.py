"""CNTK Text Format (CTF): the public API, and the image-classification view of a CTF file.

    write_ctf(path, images, labels, num_classes)           # pack (writer)
    CTFReader(path, streams).minibatches(256)              # any CTF file, full grammar (reader)
    iter_ctf_samples(path, (32, 32, 3))                    # (uint8 NHWC images, int64 labels) batches
    read_ctf_images(path, (32, 32, 3))                     # the same, the whole file at once

docs/CTF.md describes the format, the grammar, the error behaviour and this API.
"""
from __future__ import annotations

import os
from typing import Iterator, Literal

import numpy as np

from .batch import CTFBatch, SparseBatch
from .grammar import CTFError, CTFIssue, StreamSpec
from .reader import CTFReader, infer_streams
from .writer import CTFWriter, Layout, images_to_features, write_ctf

__all__ = ["CTFBatch", "CTFError", "CTFIssue", "CTFReader", "CTFWriter", "SparseBatch", "StreamSpec",
           "ctf_to_images", "images_to_features", "infer_streams", "iter_ctf_samples", "read_ctf_images",
           "write_ctf"]


def _as_pixels(features: np.ndarray) -> tuple[np.ndarray, int | None]:
    """features as uint8, and the first row holding a value that is not an integer in 0..255."""
    with np.errstate(invalid="ignore"):  # out-of-range casts are caught by the comparison below
        pixels = features.astype(np.uint8)
    if (pixels == features).all():  # one cast + one compare: range and integrality at once
        return pixels, None
    bad = (features < 0) | (features > 255) | (features != np.floor(features)) | np.isnan(features)
    return pixels, int(np.flatnonzero(bad.any(axis=1))[0])


def ctf_to_images(features: np.ndarray, shape: tuple[int, int, int], layout: Layout = "CHW") -> np.ndarray:
    """(N, H*W*C) CTF features -> (N, H, W, C) uint8, undoing ``write_ctf``'s pixel order.

    Values must be integers in 0..255 (raw pixels, as ``write_ctf`` writes them).
    """
    h, w, c = shape
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != h * w * c:
        raise ValueError(f"features of shape {x.shape} do not hold {h}x{w}x{c} images")
    if x.dtype != np.uint8:
        x, row = _as_pixels(x)
        if row is not None:
            raise ValueError(f"sample {row} has a feature that is not an integer pixel value in 0..255")
    if layout == "CHW":
        return np.ascontiguousarray(x.reshape(-1, c, h, w).transpose(0, 2, 3, 1))
    if layout == "HWC":
        return x.reshape(-1, h, w, c)
    raise ValueError(f"layout must be 'CHW' or 'HWC', got {layout!r}")


def _class_indices(labels: np.ndarray | SparseBatch, batch: CTFBatch, path: str, stream: str) -> np.ndarray:
    """One-hot (dense) or single ``i:1`` (sparse) labels -> class indices, or CTFError naming the line."""
    if isinstance(labels, SparseBatch):
        n = labels.shape[0]
        counts = np.bincount(labels.rows, minlength=n)
        ok = (counts == 1)
        ok[labels.rows[labels.values != 1]] = False
        classes = np.zeros(n, np.int64)
        classes[labels.rows] = labels.cols
    else:
        ok = ((labels == 0) | (labels == 1)).all(axis=1) & (labels.sum(axis=1) == 1)
        classes = labels.argmax(axis=1)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise CTFError(path, int(batch.lines[row]), f"stream '{stream}' is not a one-hot label "
                       "(exactly one value 1, the rest 0, or a single index:1)")
    return classes.astype(np.int64)


def iter_ctf_samples(path: str | os.PathLike, image_shape: tuple[int, int, int], label_stream: str = "labels",
                     feature_stream: str = "features", batch_size: int = 256, *, num_classes: int | None = None,
                     layout: Layout = "CHW", on_error: Literal["raise", "skip"] = "raise",
                     shuffle_buffer: int = 0, seed: int = 0,
                     drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Image-classification batches from a CTF file: ((B, H, W, C) uint8, (B,) int64 class indices).

    Each line (sequence) must hold one image (integer pixels, ``layout`` order, as ``write_ctf``
    writes) and one label, one-hot or sparse ``index:1``; other streams are ignored. num_classes
    bounds the labels (default: inferred from the first 1000 lines). shuffle_buffer > 0 shuffles
    within windows of that many samples (seeded), as CNTK's randomizationWindow does, in memory
    proportional to the window.
    """
    found = infer_streams(path, names={label_stream})  # raises if the label stream is not there
    label_format = found[label_stream].format
    streams = {feature_stream: StreamSpec(int(np.prod(image_shape))),
               label_stream: StreamSpec(num_classes or found[label_stream].dim, label_format)}
    reader = CTFReader(path, streams, on_error=on_error, unknown_streams="ignore", short_dense="error",
                       skip_sequence_ids=True)
    batches = _image_batches(reader, image_shape, feature_stream, label_stream, batch_size, layout)
    if shuffle_buffer > 0:
        batches = _window_shuffle(batches, shuffle_buffer, batch_size, np.random.default_rng(seed))
    for images, classes in batches:
        if len(images) == batch_size or not drop_last:
            yield images, classes


def read_ctf_images(path: str | os.PathLike, image_shape: tuple[int, int, int], label_stream: str = "labels",
                    feature_stream: str = "features", **kw) -> tuple[np.ndarray, np.ndarray]:
    """The whole file as ((N, H, W, C) uint8, (N,) int64), for data that fits in memory
    (CIFAR-10's train split: 150 MB). Keywords as ``iter_ctf_samples``."""
    batches = list(iter_ctf_samples(path, image_shape, label_stream, feature_stream, 4096, **kw))
    if not batches:
        return np.zeros((0, *image_shape), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _image_batches(reader: CTFReader, shape, feature_stream: str, label_stream: str, batch_size: int,
                   layout: Layout) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    path = str(reader.path)
    for batch in reader.minibatches(batch_size):
        pixels, row = _as_pixels(batch[feature_stream])
        if row is not None:
            raise CTFError(path, int(batch.lines[row]), f"stream '{feature_stream}' holds a value that is "
                           "not an integer pixel in 0..255")
        classes = _class_indices(batch[label_stream], batch, path, label_stream)
        yield ctf_to_images(pixels, shape, layout), classes


def _window_shuffle(batches, window: int, batch_size: int, rng: np.random.Generator):
    """Collect ``window`` samples, shuffle them, emit full batches, carry the remainder over."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    held = 0
    exhausted = False
    it = iter(batches)
    while not exhausted:
        for x, y in it:
            images.append(x), labels.append(y)
            held += len(x)
            if held >= window:
                break
        else:
            exhausted = True
        if not held:
            return
        order = rng.permutation(held)
        x, y = np.concatenate(images)[order], np.concatenate(labels)[order]
        keep = held if exhausted else held - held % batch_size
        for start in range(0, keep, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        images, labels, held = [x[keep:]], [y[keep:]], held - keep
