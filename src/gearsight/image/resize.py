"""Fit an RGB image into a square of side ``size``: the one geometry shared by pack and predict.

Training and serving must resize identically, or accuracy silently drops in production; so both
call ``fit_square`` (numpy + Pillow only, so the serving image needs no torch).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

ResizeMode = Literal["pad", "crop", "stretch"]
RESIZE_MODES = ("pad", "crop", "stretch")
#: crop scales the short side up to ``size``: a 2000x1 image would become 128000x64 (and 40000x1
#: at 224 px ~8 GB). Longer than this aspect ratio, the centre is cut to it before resizing.
MAX_CROP_ASPECT = 16


def crop_box(width: int, height: int) -> tuple[int, int, int, int] | None:
    """The centre region of aspect ratio at most MAX_CROP_ASPECT, or None when the image fits."""
    if max(width, height) <= MAX_CROP_ASPECT * min(width, height):
        return None
    if width > height:
        keep = MAX_CROP_ASPECT * height
        return (width - keep) // 2, 0, (width - keep) // 2 + keep, height
    keep = MAX_CROP_ASPECT * width
    return 0, (height - keep) // 2, width, (height - keep) // 2 + keep


def fit_square(rgb: np.ndarray, size: int, mode: ResizeMode = "pad", fill: int = 255) -> np.ndarray:
    """``H x W x 3`` uint8 -> ``size x size x 3`` uint8.

    pad: keep the aspect ratio, shrink the long side to ``size`` and centre on ``fill`` (white by
         default: catalog photos are cut-outs on white, so white padding adds no edge to learn).
    crop: keep the aspect ratio, scale the short side to ``size`` and take the centre square (an
          image longer than MAX_CROP_ASPECT:1 is first cut to its centre at that ratio).
    stretch: ignore the aspect ratio.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    h, w = rgb.shape[:2]
    box = crop_box(w, h) if mode == "crop" else None
    if box is not None:  # before resizing: the aspect ratio bounds the upscaled size
        rgb = rgb[box[1] : box[3], box[0] : box[2]]
        h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    if mode == "stretch":
        return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0))
    scale = size / max(h, w) if mode == "pad" else size / min(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # BICUBIC with reducing_gap: close to Lanczos quality at a fraction of the cost for big shrinks.
    im = im.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = np.asarray(im)
    if mode == "crop":
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return np.ascontiguousarray(out[top : top + size, left : left + size])
    canvas = np.full((size, size, 3), fill, dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = out
    return canvas
