"""Mixup and CutMix on a training batch: each image is blended with (mixup) or has a box pasted from
(CutMix) another image of the batch, and the loss is the same blend of the two labels.

Regularisers for small training sets (mixup: Zhang et al. 2018; CutMix: Yun et al. 2019; timm's
``Mixup`` picks one of the two per batch, as here). Written here rather than taken from timm: timm's
version works on one-hot targets and owns the label smoothing, where gearsight's loss takes class
indices (``F.cross_entropy(..., label_smoothing=)``); the blend of two such losses is the same thing.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup: float, cutmix: float
              ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(mixed x, partner labels, lam)``: the loss is ``lam * CE(y) + (1 - lam) * CE(partner)``.

    ``mixup``/``cutmix``: the Beta(a, a) parameter of each (0 = off); with both on, each batch uses
    one of them at random. The partner of image i is image perm[i] of the same batch.
    """
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(()).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    if not use_cutmix:
        return x * lam + x[perm] * (1 - lam), y[perm], lam
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    x = x.clone()
    x[..., top:bottom, left:right] = x[perm, ..., top:bottom, left:right]
    lam = 1 - (bottom - top) * (right - left) / (h * w)  # the box as clipped to the image
    return x, y[perm], lam


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, lam: float,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    return (lam * F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            + (1 - lam) * F.cross_entropy(logits, partner, label_smoothing=label_smoothing))
