"""CNTK's ImageDeserializer: a map file of images and labels, decoded lazily, transformed on the fly.

    ds = MapFileDataset("train_map.txt", transforms=pipeline_or_config, num_classes=10)
    for images, labels in ds.minibatches(128, shuffle=True, seed=0, workers=2, epoch=e):
        ...                      # images: NCHW uint8 (float32 after Mean), labels: int64
    ds.skipped                   # every undecodable image met so far: map line, path, reason

The map file is read by cntk/mapfile.py (the one parser, shared with ``pack``); an image that cannot
be read is skipped and reported, never stops a pass.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gearsight.cntk.mapfile import MapEntry, display_source, read_map_file, read_source_bytes
from gearsight.cntk.transforms import Pipeline, sample_rng, stack_images, transforms_from_config
from gearsight.image.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image


@dataclass(frozen=True)
class Skipped:
    index: int   # entry index in the map file's order
    line: int
    source: str
    reason: str


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
        source = "<base64>" if self.base64 else display_source(self.sources[i])
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
