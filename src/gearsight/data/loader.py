"""Minibatches from packed data: the whole split lives in RAM as one uint8 tensor.

Why no torch DataLoader: the gear split is 18 MB at 64 px (CIFAR-10 150 MB); with everything in
memory a batch is an index + gather, ~1 ms, so worker processes would only add IPC latency.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from gearsight.data.composite import background_augment
from gearsight.data.transforms import (cutout, draw_cutout, draw_flip_translate, flip_translate, pad_images,
                                       to_model_input)


@dataclass
class Batches:
    images: torch.Tensor  # uint8 NHWC
    labels: torch.Tensor  # int64
    batch_size: int
    mean: list[float]
    std: list[float]
    shuffle: bool = False
    augment: bool = False
    flip: bool = True
    alternate_flip: bool = False  # airbench: each image mirrored in every other epoch, not at random
    translate: int = 0
    fill: int = 255
    pad_mode: str = "fill"  # "fill" or "reflect", see transforms.pad_images
    drop_last: bool = False
    seed: int = 0
    rank: int = 0  # data-parallel shard of this process
    world_size: int = 1
    # Background augmentation (data/composite.py): object masks (uint8 NHW, 255 = object) and a scene
    # pool prepared at this size; each training image is pasted on a scene with ``background_p``.
    masks: torch.Tensor | None = None
    backgrounds: torch.Tensor | None = None
    background_p: float = 0.0
    background_scale: tuple[float, float] = (0.5, 1.0)
    cutout: int = 0  # side in px of a square set to the mean colour per training image; 0 = off

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, **kw) -> "Batches":
        # Copy read-only memory maps into RAM: torch tensors must be writable, and RAM is the point.
        images = np.array(images) if not images.flags.writeable else np.ascontiguousarray(images)
        return cls(torch.from_numpy(images), torch.from_numpy(np.asarray(labels)).long(), **kw)

    def __post_init__(self):
        # Pad the whole split once (a few MB) instead of every batch.
        self._padded = pad_images(self.images, self.translate, self.fill, self.pad_mode) if self.augment else None
        if self.augment and self.masks is not None and self.backgrounds is not None:
            # The mask rides along as a 4th channel, so it gets the same flips and shifts.
            masks = pad_images(self.masks[..., None], self.translate, 0, "fill")
            self._padded = torch.cat([self._padded, masks], dim=3)
        parity_gen = torch.Generator().manual_seed(self.seed * 7919 + 1)
        self._flip_parity = torch.randint(0, 2, (len(self.labels),), generator=parity_gen)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (normalized float NCHW channels_last, labels) for one pass; seeded per epoch.

        With ``world_size`` > 1 every process walks the same global batches (same seed) and takes
        its own slice of each, so one data-parallel step sees exactly the images of one
        single-process step, and the averaged gradient is the same.
        """
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        # Its own stream per process: pasting draws a varying count, and must not shift ``gen``, which
        # every data-parallel process walks in step.
        paste_gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 64 + self.rank + 1)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            params = draw_flip_translate(len(idx), self.translate, self.flip, gen) if self.augment else None
            if self.augment and self.flip and self.alternate_flip:
                # A fixed random half is mirrored in even epochs, the other half in odd ones: every
                # image is seen both ways every 2 epochs (airbench: worth ~0.2 epochs at 10 epochs).
                params[:, 2] = (self._flip_parity[idx] ^ (epoch % 2)).long()
            # Drawn for the whole global batch, like ``params``, and only when on: ``gen``'s stream
            # (and so every run without cutout) stays as it was.
            corners = (draw_cutout(len(idx), *self.images.shape[1:3], self.cutout, gen)
                       if self.augment and self.cutout else None)
            if self.world_size > 1:
                idx = idx.tensor_split(self.world_size)[self.rank]
                params = params.tensor_split(self.world_size)[self.rank] if self.augment else None
                corners = corners.tensor_split(self.world_size)[self.rank] if corners is not None else None
            if self.augment:
                images = flip_translate(self._padded[idx], self.translate, params)
                if images.shape[3] == 4:  # RGB + mask
                    images, masks = images[..., :3], images[..., 3]
                    if self.background_p > 0:
                        images = background_augment(images, masks, self.backgrounds, self.background_p,
                                                    tuple(self.background_scale), paste_gen)
                if corners is not None:
                    images = cutout(images, corners, self.cutout, [round(255 * m) for m in self.mean])
            else:
                images = self.images[idx]
            yield to_model_input(images, self.mean, self.std), self.labels[idx]


class MapFileBatches:
    """The trainer's batch interface over a CNTK map file, decoded and transformed every epoch.

    Where ``Batches`` serves packed uint8 from RAM, this reads each image file again each epoch and
    applies the map file's CNTK transforms (gearsight.cntk.dataset, cntk.transforms) on ``workers``
    processes: CNTK's image deserializer, for data that is not packed. It is ~12x slower than packed
    input (docs/BENCHMARKS.md, "CIFAR-10 training input") but needs no pack step and sees fresh
    random crops every epoch. Pipeline output (uint8 or float 0..255 pixels) is normalized with
    ``mean``/``std`` like packed data. Undecodable images are skipped and reported by the dataset.
    """

    init_sample = 5000  # images for data-dependent init (``images``), as train.fit_model_to_data uses

    def __init__(self, dataset, batch_size: int, mean: list[float], std: list[float], *, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, workers: int = 0):
        self.dataset, self.batch_size = dataset, batch_size
        self.mean, self.std = mean, std
        self.shuffle, self.drop_last, self.seed, self.workers = shuffle, drop_last, seed, workers
        self.rank, self.world_size = 0, 1
        copies = dataset.pipeline.copies
        self.labels = torch.from_numpy(np.repeat(np.asarray(dataset.labels), copies)).long()

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @functools.cached_property
    def images(self) -> torch.Tensor:
        """A seeded random 5,000 images through the pipeline (NHWC uint8), for data-dependent init
        (AirNet's whitening). Random, not the first 5,000: map files are often in class order, and
        the whitening would be fitted on airplanes only. Decoded once, on first access."""
        sample = self.dataset.minibatches(min(len(self.labels), self.init_sample), shuffle=True, seed=self.seed,
                                          workers=self.workers)
        return next(sample)[0].round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.world_size > 1:
            raise ValueError("map-file input is single-process; pack the data for torchrun")
        for x, y in self.dataset.minibatches(self.batch_size, self.shuffle, self.seed, self.workers, epoch=epoch,
                                             drop_last=self.drop_last):
            yield to_model_input(x.permute(0, 2, 3, 1).contiguous(), self.mean, self.std), y
