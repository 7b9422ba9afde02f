"""Geometric CNTK transforms: Crop, Scale, HFlip and Transpose (CNTK 2.x ImageTransformers.cpp
semantics; the package docstring and docs/MAPFILE.md list the deliberate differences)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from gearsight.cntk.transforms.base import (Range, Transform, _bool, _camel, _choice, _number, _parts, _range,
                                            to_grayscale)

# -- Crop ------------------------------------------------------------------------------------------

CROP_TYPES = ("center", "randomside", "randomarea", "multiview10")
JITTER_TYPES = ("none", "uniratio")


@dataclass
class Crop(Transform):
    """CNTK ``Crop``: a square window (or ``aspectRatio``-jittered rectangle) cut from the image.

    Side of the window: ``sideRatio`` x the short side, or sqrt(``areaRatio`` x area); neither given
    means the whole image. ``jitterType`` "none" takes each range's min, "uniRatio" draws uniformly
    from it. A jittered aspect ratio r gives sides sqrt(A r) x sqrt(A / r), swapped at random. If the
    window does not fit, CNTK redraws up to 10 times and then takes the whole image; so do we.
    Placement: centered (Center), uniform (RandomSide, RandomArea), or corner/center by view index
    (MultiView10: views 0-4 TL, TR, BL, BR, center; 5-9 the same flipped). ``hflip`` defaults to on
    for RandomSide/RandomArea, as in CNTK. ``cropSize`` = width:height crops exactly that (centered).
    """

    crop_type: str = "center"
    side_ratio: Any = None
    area_ratio: Any = None
    aspect_ratio: Any = 1.0
    jitter_type: str = "none"
    crop_size: Any = None
    hflip: Any = None
    cntk_type: ClassVar[str] = "Crop"

    def __post_init__(self):
        o = "Crop"
        # "random" is CNTK 1.x's name for the random-position crop that became RandomSide.
        self.crop_type = _choice(o, "cropType", self.crop_type, CROP_TYPES, {"random": "randomside"})
        self.jitter_type = _choice(o, "jitterType", self.jitter_type, JITTER_TYPES)
        for key in ("side_ratio", "area_ratio"):
            value = getattr(self, key)
            if value is not None:
                lo, hi = _range(o, _camel(key), value)
                if not (0 < lo and hi <= 1):
                    raise ValueError(f"{o}: {_camel(key)} must be in (0, 1], got {lo}:{hi}")
                setattr(self, key, (lo, hi))
        if self.side_ratio and self.area_ratio:
            raise ValueError(f"{o}: sideRatio and areaRatio cannot both be given")
        need = {"randomside": "side_ratio", "randomarea": "area_ratio"}.get(self.crop_type)
        if need and getattr(self, need) is None and self.crop_size is None:
            raise ValueError(f"{o}: cropType {self.crop_type} needs {_camel(need)}")
        # CNTK's source accepts aspectRatio in (0, 1] but its own ResNet50 config uses 0.75:1.3333;
        # r and 1/r are equivalent under the random side swap, so any positive range is accepted.
        self.aspect_ratio = _range(o, "aspectRatio", self.aspect_ratio)
        if self.aspect_ratio[0] <= 0:
            raise ValueError(f"{o}: aspectRatio must be > 0, got {self.aspect_ratio}")
        if self.crop_size is not None:
            parts = _parts(self.crop_size)  # width:height, or one value for both (CNTK's intargvector)
            self.crop_size = (_number(o, "cropSize", parts[0], int), _number(o, "cropSize", parts[-1], int))
            if min(self.crop_size) <= 0:
                raise ValueError(f"{o}: cropSize must be positive width:height, got {self.crop_size}")
        if self.hflip is None:
            self.hflip = self.crop_type in ("randomside", "randomarea")
        self.hflip = _bool(o, "hflip", self.hflip) and self.crop_type != "multiview10"

    def _jitter(self, bounds: Range, rng: np.random.Generator) -> float:
        lo, hi = bounds
        return lo if self.jitter_type == "none" or lo == hi else float(rng.uniform(lo, hi))

    def window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
        """(crop height, crop width) for an h x w image."""
        if self.crop_size:
            return min(h, self.crop_size[1]), min(w, self.crop_size[0])
        for _ in range(10):
            ch, cw = h, w
            if self.side_ratio:
                ch = cw = max(1, round(min(h, w) * self._jitter(self.side_ratio, rng)))
            elif self.area_ratio:
                ch = cw = max(1, round(math.sqrt(h * w * self._jitter(self.area_ratio, rng))))
            aspect = self._jitter(self.aspect_ratio, rng)
            if aspect != 1.0:
                area = ch * cw
                long, short = max(1, int(math.sqrt(area * aspect))), max(1, int(math.sqrt(area / aspect)))
                cw, ch = (long, short) if rng.random() < 0.5 else (short, long)
            if ch <= h and cw <= w:
                return ch, cw
        return h, w

    def offset(self, h: int, w: int, ch: int, cw: int, rng: np.random.Generator, view: int) -> tuple[int, int]:
        if self.crop_type in ("randomside", "randomarea"):
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if self.crop_type == "multiview10" and view % 5 < 4:
            corner = view % 5  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
            return (h - ch) * (corner // 2), (w - cw) * (corner % 2)
        return (h - ch) // 2, (w - cw) // 2

    def apply(self, img, rng, view=0):
        h, w = img.shape[-2:]
        ch, cw = self.window(h, w, rng)
        top, left = self.offset(h, w, ch, cw, rng, view % 10)
        img = F.crop(img, top, left, ch, cw)
        flip = (self.hflip and rng.random() < 0.5) or (self.crop_type == "multiview10" and view % 10 >= 5)
        return F.horizontal_flip(img) if flip else img


# -- Scale -----------------------------------------------------------------------------------------

INTERPOLATIONS = {"nearest": InterpolationMode.NEAREST, "linear": InterpolationMode.BILINEAR,
                  "cubic": InterpolationMode.BICUBIC, "lanczos": InterpolationMode.LANCZOS}
SCALE_MODES = ("fill", "crop", "pad")


@dataclass
class Scale(Transform):
    """CNTK ``Scale``: resize to ``width`` x ``height`` with ``channels`` (1 = grayscale, 3 = RGB).

    scaleMode fill: stretch; crop: scale so the image covers the target, cut the centre; pad: scale
    so it fits inside, centre it and pad with ``padValue`` (-1, CNTK's default, repeats the edge
    pixels). ``interpolations``: nearest, linear, cubic or lanczos; several joined by ':' pick one at
    random per image (CNTK 1.x behaviour). Resizing is torchvision's, with antialiasing on (OpenCV,
    which CNTK used, aliases when shrinking).
    """

    width: Any
    height: Any
    channels: Any = 3
    interpolations: Any = "linear"
    scale_mode: str = "fill"
    pad_value: Any = -1
    cntk_type: ClassVar[str] = "Scale"

    def __post_init__(self):
        o = "Scale"
        self.width, self.height = _number(o, "width", self.width, int), _number(o, "height", self.height, int)
        self.channels = _number(o, "channels", self.channels, int)
        self.pad_value = _number(o, "padValue", self.pad_value, int)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{o}: width and height must be positive, got {self.width}x{self.height}")
        if self.channels not in (1, 3):
            raise ValueError(f"{o}: channels must be 1 or 3, got {self.channels}")
        if not -1 <= self.pad_value <= 255:
            raise ValueError(f"{o}: padValue must be -1 (repeat the border) or 0..255, got {self.pad_value}")
        names = self.interpolations.split(":") if isinstance(self.interpolations, str) else list(self.interpolations)
        self.interpolations = tuple(_choice(o, "interpolations", n.strip(), INTERPOLATIONS) for n in names)
        self.scale_mode = _choice(o, "scaleMode", self.scale_mode, SCALE_MODES)

    def apply(self, img, rng, view=0):
        if self.channels == 1 and img.shape[0] == 3:
            img = to_grayscale(img)
        elif self.channels == 3 and img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        names = self.interpolations
        mode = INTERPOLATIONS[names[int(rng.integers(len(names)))] if len(names) > 1 else names[0]]
        h, w = img.shape[-2:]
        if self.scale_mode == "fill":
            return F.resize(img, [self.height, self.width], interpolation=mode, antialias=True)
        # CNTK sizes crop/pad by one side only, which can miss the target when the target is not
        # square; max/min of the two ratios is the general form (identical for square targets).
        ratio = (max if self.scale_mode == "crop" else min)(self.width / w, self.height / h)
        nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
        img = F.resize(img, [nh, nw], interpolation=mode, antialias=True)
        if self.scale_mode == "crop":  # offsets rounded down, as CNTK (torchvision's center_crop rounds)
            return F.crop(img, (nh - self.height) // 2, (nw - self.width) // 2, self.height, self.width)
        top, left = (self.height - nh) // 2, (self.width - nw) // 2
        padding = [left, top, self.width - nw - left, self.height - nh - top]
        if self.pad_value < 0:
            return F.pad(img, padding, padding_mode="edge")
        return F.pad(img, padding, fill=self.pad_value, padding_mode="constant")


# -- HFlip, Transpose -------------------------------------------------------------------------------

@dataclass
class HFlip(Transform):
    """Mirror left-right with ``probability`` (a gearsight type; CNTK's is Crop's ``hflip`` key)."""

    probability: Any = 0.5
    cntk_type: ClassVar[str] = "HFlip"

    def __post_init__(self):
        self.probability = _number("HFlip", "probability", self.probability)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"HFlip: probability must be in [0, 1], got {self.probability}")

    def apply(self, img, rng, view=0):
        return F.horizontal_flip(img) if rng.random() < self.probability else img


@dataclass
class Transpose(Transform):
    """CNTK ``Transpose`` (HWC -> CHW): accepted and a no-op, since our output is always CHW."""

    cntk_type: ClassVar[str] = "Transpose"

    def apply(self, img, rng, view=0):
        return img
