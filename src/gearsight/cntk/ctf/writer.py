"""CTF writer: images (or feature vectors) and integer labels -> one CTF line per sample.

    |labels 0 0 1 0 0 0 0 0 0 0 |features 59 43 50 ...          (one-hot labels)
    |labels 2:1 |features 59 43 50 ...                          (sparse_labels=True)

Feature order is CHW: an (N, H, W, C) image is written channel plane by channel plane (all red
values row by row, then green, then blue). That is the order of the official CIFAR-10 python batches
and of CNTK's own CIFAR-10 CTF files (``cifar_utils.saveTxt`` writes those rows unchanged);
``ctf_to_images`` undoes it.
``layout="HWC"`` writes pixels in memory order instead.

uint8 data is formatted with a 256-entry table and whole-array numpy (no per-value Python), so
CIFAR-10's 50,000 x 3,072 values take seconds; other dtypes go through ``str``/``repr`` per value.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, Literal

import numpy as np

Layout = Literal["CHW", "HWC"]
_ROWS_PER_BLOCK = 512
_NAME_RE = re.compile(r"[^\s|#][^\s|]*")

# " 0".." 255", each zero-padded to 4 bytes; zero bytes are squeezed out after the gather.
_U8_TABLE = np.zeros((256, 4), np.uint8)
for _v in range(256):
    _text = f" {_v}".encode()
    _U8_TABLE[_v, : len(_text)] = np.frombuffer(_text, np.uint8)


def images_to_features(images: np.ndarray, layout: Layout = "CHW") -> np.ndarray:
    """(N, H, W, C) or (N, H, W) images -> (N, D) rows in the given pixel order; (N, D) passes through."""
    if layout not in ("CHW", "HWC"):
        raise ValueError(f"layout must be 'CHW' or 'HWC', got {layout!r}")
    x = np.asarray(images)
    if x.ndim == 4 and layout == "CHW":
        x = x.transpose(0, 3, 1, 2)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"features must be (N, D), (N, H, W) or (N, H, W, C), got shape {x.shape}")
    return x.reshape(len(x), -1)


def _check_name(name: str) -> bytes:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"stream name {name!r} must be non-empty, without whitespace or '|', "
                         "and not start with '#'")
    return name.encode()


class CTFWriter:
    """Appends (features, labels) batches to a CTF file; use as a context manager.

    ``write`` may be called many times, so data larger than memory can be packed batch by batch.
    """

    def __init__(self, path: str | os.PathLike, num_classes: int, *, label_stream: str = "labels",
                 feature_stream: str = "features", sparse_labels: bool = False, layout: Layout = "CHW"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.path, self.num_classes, self.layout = Path(path), int(num_classes), layout
        self.sparse_labels = sparse_labels
        label, feature = _check_name(label_stream), _check_name(feature_stream)
        if label == feature:
            raise ValueError(f"label and feature streams must differ, both are {label_stream!r}")
        self._head, self._tail = b"|" + label + b" ", b" |" + feature  # around the label values
        if sparse_labels:  # "|labels 7:1 |features": one short prefix per class, zero-padded
            prefixes = [self._prefix(c) for c in range(self.num_classes)]
            self._prefix_table = np.zeros((self.num_classes, max(map(len, prefixes))), np.uint8)
            for c, prefix in enumerate(prefixes):
                self._prefix_table[c, : len(prefix)] = np.frombuffer(prefix, np.uint8)
        else:  # one-hot: an all-zero prefix, with the class's '0' turned into '1' per row
            self._zero_prefix = np.frombuffer(self._head + b" ".join([b"0"] * self.num_classes) + self._tail,
                                              np.uint8)
        self._file: IO[bytes] | None = open(self.path, "wb")
        self.lines_written = 0

    def _prefix(self, cls: int) -> bytes:
        if self.sparse_labels:
            return self._head + f"{cls}:1".encode() + self._tail
        onehot = bytearray(b" ".join([b"0"] * self.num_classes))
        onehot[2 * cls] = ord("1")
        return self._head + bytes(onehot) + self._tail

    def _prefix_rows(self, y: np.ndarray) -> np.ndarray:
        if self.sparse_labels:
            return self._prefix_table[y]
        rows = np.tile(self._zero_prefix, (len(y), 1))
        rows[np.arange(len(y)), len(self._head) + 2 * y] = ord("1")
        return rows

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append samples: images as in ``images_to_features``, labels ints in [0, num_classes)."""
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        features = images_to_features(images, self.layout)
        labels = self._labels(labels, len(features))
        if features.dtype == np.uint8:
            write_rows = self._write_uint8
        else:
            self._check_finite(features)
            write_rows = self._write_generic
        for start in range(0, len(features), _ROWS_PER_BLOCK):
            stop = start + _ROWS_PER_BLOCK
            write_rows(features[start:stop], labels[start:stop])
        self.lines_written += len(features)

    def _labels(self, labels: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) to match the features, got {y.shape}")
        if y.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        bad = np.flatnonzero((y < 0) | (y >= self.num_classes))
        if bad.size:
            raise ValueError(f"label {y[bad[0]]} of sample {bad[0]} is not in [0, {self.num_classes})")
        return y.astype(np.int64)

    def _check_finite(self, features: np.ndarray) -> None:
        if features.dtype.kind == "f" and not np.isfinite(features).all():
            row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
            raise ValueError(f"sample {row} has a NaN or infinite feature (CTF cannot hold them)")

    def _write_uint8(self, x: np.ndarray, y: np.ndarray) -> None:
        # One fixed-width uint8 row per line (prefix, 4 bytes per value, '\n'), then drop the padding.
        prefix = self._prefix_rows(y)
        rows = np.empty((len(x), prefix.shape[1] + 4 * x.shape[1] + 1), np.uint8)
        rows[:, : prefix.shape[1]] = prefix
        rows[:, prefix.shape[1]:-1] = _U8_TABLE[x].reshape(len(x), -1)
        rows[:, -1] = ord("\n")
        self._file.write(rows[rows != 0].tobytes())

    def _write_generic(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.dtype.kind == "f":  # float64: repr round-trips; float32: 9 significant digits do
            fmt, values = (repr if x.dtype.itemsize >= 8 else "{:.9g}".format), x.astype(np.float64)
        else:
            fmt, values = str, x.astype(np.int64)
        self._file.write(b"".join(self._prefix(c) + "".join(" " + fmt(v) for v in row).encode() + b"\n"
                                  for c, row in zip(y.tolist(), values.tolist())))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "CTFWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_ctf(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, num_classes: int, *,
              label_stream: str = "labels", feature_stream: str = "features", sparse_labels: bool = False,
              layout: Layout = "CHW") -> int:
    """Write one CTF line per sample (see module doc); returns the number of lines written.

    images: (N, H, W, C) / (N, H, W) images (flattened in ``layout`` order) or (N, D) features.
    labels: (N,) ints in [0, num_classes), written one-hot, or as ``index:1`` with sparse_labels.
    """
    with CTFWriter(path, num_classes, label_stream=label_stream, feature_stream=feature_stream,
                   sparse_labels=sparse_labels, layout=layout) as writer:
        writer.write(images, labels)
        return writer.lines_written
