"""CNTK's ImageDeserializer transforms, named and parameterized as CNTK names them, on torch tensors.

    pipeline = transforms_from_config('''transforms = (
        { type = "Crop" ; cropType = "RandomSide" ; sideRatio = 0.8:1.0 ; jitterType = "UniRatio" } :
        { type = "Scale" ; width = 32 ; height = 32 ; channels = 3 ; interpolations = "linear" } :
        { type = "Mean" ; meanFile = "CIFAR-10_mean.xml" } )''')
    chw = pipeline(hwc_uint8_image, rng=sample_rng(seed, index, epoch))

Semantics follow CNTK 2.x's ImageTransformers.cpp (crop sizes, ratio jitter, 10 attempts then the
whole image, flip on by default for random crops, scale modes, HSV saturation, mean-image layout),
which the reader docs in ../shared/data/cntk/docs only sketch. Differences, all deliberate, are
listed in docs/MAPFILE.md. The config syntax (BrainScript records, ``a:b`` arrays, ``$var$``) is parsed by
``config.parse_config`` (which imports nothing from here); both the deserializer form (``transforms = (...)``) and the legacy ImageReader
form (``features = [ width = ... cropType = ... ]``) are read.

Images: a transform takes one HWC image (numpy or tensor, uint8 or float; what decode_image and the
packed format hold) and returns a CHW tensor (PyTorch's layout; CNTK needed a Transpose for that).
uint8 stays uint8 through Crop, Scale, Color, Intensity and HFlip (photometric results are rounded,
at most 0.5 level off); Mean returns float32. Randomness comes only from the ``rng`` argument, a
numpy Generator: ``sample_rng(seed, index, epoch)`` makes one per sample, so a result depends on
(seed, index, epoch) alone, whatever the number of DataLoader workers.
"""
from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

# The config language is parsed in config.py (no image code there); re-exported so callers need one import.
from gearsight.cntk.config import find_pipelines, parse_config, pick_pipeline  # noqa: F401

ImageLike = Union[np.ndarray, torch.Tensor]
Range = tuple[float, float]


def sample_rng(seed: int, index: int, epoch: int = 0) -> np.random.Generator:
    """The random stream of one sample: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


def as_chw(image: ImageLike) -> torch.Tensor:
    """An HWC (or HW) image, numpy or torch, -> a CHW tensor sharing memory where it can."""
    if isinstance(image, np.ndarray):
        if not image.flags.writeable:  # e.g. a read-only memory map of a packed file
            image = image.copy()
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected an HWC numpy array or tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected one HWC image with 1 or 3 channels, got shape {tuple(image.shape)}")
    return image.permute(2, 0, 1)


def _camel(name: str) -> str:
    """Our field name -> CNTK's config key: side_ratio -> sideRatio."""
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _hint(value: Any) -> str:
    return " (an unresolved config variable: pass variables={...})" if isinstance(value, str) and "$" in value else ""


def _parts(value: Any) -> list:
    """CNTK's argvector forms: ``"0.8:1.0"``, ``[0.8, 1.0]`` (a parsed ``0.8:1.0``) or one value."""
    return value.split(":") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]


def _range(owner: str, key: str, value: Any) -> Range:
    """CNTK's floatargvector: ``0.875`` or ``0.8:1.0`` -> (min, max); one value means min = max."""
    parts = _parts(value)
    try:
        if isinstance(value, bool) or not 1 <= len(parts) <= 2:
            raise ValueError
        lo, hi = (float(parts[0]), float(parts[-1]))
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {key} must be a number or min:max, got {value!r}{_hint(value)}") from None
    if lo > hi:
        raise ValueError(f"{owner}: {key} min {lo} is above max {hi}")
    return lo, hi


def _number(owner: str, key: str, value: Any, kind=float):
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if kind is int and isinstance(value, float) and number != value:
            raise ValueError
        return number
    except (TypeError, ValueError):
        word = "an integer" if kind is int else "a number"
        raise ValueError(f"{owner}: {key} must be {word}, got {value!r}{_hint(value)}") from None


def _bool(owner: str, key: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{owner}: {key} must be true or false, got {value!r}")


def _choice(owner: str, key: str, value: Any, allowed: Iterable[str], aliases: Mapping[str, str] = {}) -> str:
    low = str(value).lower()
    low = aliases.get(low, low)
    if low not in allowed:
        raise ValueError(f"{owner}: {key} must be one of {', '.join(allowed)}; got {value!r}")
    return low


def to_grayscale(img: torch.Tensor) -> torch.Tensor:
    """RGB CHW -> 1 x H x W with ITU-R 601 weights (OpenCV's, so CNTK's), rounded.

    Hand-written: torchvision's uint8 rgb_to_grayscale truncates after weighting with weights that
    sum to 0.9999, which turns grey 100 into 99 and white into 254.
    """
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)[:, None, None]
    return _like((img.to(torch.float32) * weights).sum(0, keepdim=True).clamp_(0, 255), img.dtype)


def _like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float result of a photometric op back to the input's dtype (values are already in 0..255)."""
    return x.round_().to(torch.uint8) if dtype == torch.uint8 else x


class Transform:
    """One step. ``apply`` maps a CHW tensor to a CHW tensor; calling it takes an HWC image."""

    cntk_type: ClassVar[str] = ""
    path_fields: ClassVar[tuple[str, ...]] = ()  # fields holding file names (resolved against base_dir)

    def apply(self, img: torch.Tensor, rng: np.random.Generator, view: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, image: ImageLike, rng: np.random.Generator | int | None = None) -> torch.Tensor:
        """One HWC image -> CHW tensor; ``rng`` a Generator, a seed, or None for fresh OS entropy."""
        return self.apply(as_chw(image), np.random.default_rng(rng), 0)


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


# -- Mean and Intensity: OpenCV XML files ------------------------------------------------------------

MEAN_LAYOUTS = ("auto", "hwc-bgr", "chw-rgb")


def _xml_root(path: str | os.PathLike) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not an OpenCV XML file ({exc})") from None


def read_opencv_matrix(path: str | os.PathLike, name: str, root: ET.Element | None = None) -> np.ndarray:
    """The ``<name type_id="opencv-matrix">`` of an OpenCV FileStorage XML file -> rows x cols x channels."""
    root = _xml_root(path) if root is None else root
    node = root.find(name)
    if node is None or node.find("data") is None:
        raise ValueError(f"{path}: no <{name}> matrix with <data>")
    try:
        rows, cols = int(node.findtext("rows")), int(node.findtext("cols"))
        match = re.fullmatch(r"(\d*)([ucwsifd])", (node.findtext("dt") or "").strip())
        channels = int(match.group(1) or 1)
        values = np.array(node.findtext("data").split(), dtype=np.float64)
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{path}: <{name}> needs integer <rows>, <cols>, a <dt> such as 'f' or '3f' "
                         "and numeric <data>") from None
    if values.size != rows * cols * channels:
        raise ValueError(f"{path}: <{name}> holds {values.size} values, not rows x cols x channels = "
                         f"{rows} x {cols} x {channels}")
    return values.astype(np.float32).reshape(rows, cols, channels)


def _looks_planar(values: np.ndarray) -> bool:
    """True if 3-channel mean data reads better as planes (CHW) than interleaved pixels (HWC).

    In a mean image neighbouring pixels of one channel are close, while channels differ by several
    levels. Interleaved data therefore changes more from element i to i+1 (another channel) than
    to i+3 (the next pixel, same channel); planar data the other way round.
    """
    step1 = np.abs(np.diff(values)).mean()
    step3 = np.abs(values[3:] - values[:-3]).mean()
    return bool(step1 < step3)


def read_mean_file(path: str | os.PathLike, layout: str = "auto") -> np.ndarray:
    """CNTK's ``meanFile`` (OpenCV XML: Channel, Row, Col, MeanImg) -> H x W x C float32, RGB order.

    CNTK reads MeanImg as OpenCV does: interleaved HWC pixels in BGR order ("hwc-bgr"). Its own
    CIFAR-10 example wrote CIFAR-10_mean.xml planar in RGB ("chw-rgb", as the python batches are
    laid out), so CNTK subtracted a scrambled image there. "auto" tells the two apart by smoothness
    (see _looks_planar); pass the layout to overrule it.
    """
    layout = _choice("Mean", "meanLayout", layout, MEAN_LAYOUTS)
    root = _xml_root(path)
    matrix = read_opencv_matrix(path, "MeanImg", root).ravel()
    try:
        c, h, w = (int(root.findtext(tag)) for tag in ("Channel", "Row", "Col"))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: needs integer <Channel>, <Row> and <Col> elements") from None
    if c * h * w != matrix.size or c not in (1, 3):
        raise ValueError(f"{path}: Channel x Row x Col = {c} x {h} x {w} does not match the {matrix.size} "
                         "values of MeanImg (or Channel is not 1 or 3)")
    if layout == "auto":
        layout = "chw-rgb" if c == 3 and _looks_planar(matrix) else "hwc-bgr"
    if layout == "chw-rgb":
        return np.ascontiguousarray(matrix.reshape(c, h, w).transpose(1, 2, 0))
    return np.ascontiguousarray(matrix.reshape(h, w, c)[..., ::-1])


@dataclass
class Mean(Transform):
    """CNTK ``Mean``: subtract a per-pixel mean image (``meanFile``); returns float32.

    Without meanFile it does nothing, as in CNTK. The image must already have the mean's size
    (CNTK warns and skips; we raise, since a skipped mean is a silent training bug).
    ``meanLayout`` (a gearsight key): auto, hwc-bgr or chw-rgb, see read_mean_file.
    """

    mean_file: Any = None
    mean_layout: str = "auto"
    mean: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)  # CHW float32, RGB
    cntk_type: ClassVar[str] = "Mean"
    path_fields: ClassVar[tuple[str, ...]] = ("mean_file",)

    def __post_init__(self):
        if self.mean_file is not None:
            self.mean = torch.from_numpy(read_mean_file(self.mean_file, self.mean_layout)).permute(2, 0, 1).contiguous()

    @classmethod
    def from_array(cls, mean_hwc: np.ndarray) -> "Mean":
        """A Mean transform from an H x W x C RGB array (e.g. ``images.mean(0)`` of a packed split)."""
        out = cls()
        out.mean = as_chw(np.asarray(mean_hwc, dtype=np.float32)).contiguous()
        return out

    def apply(self, img, rng, view=0):
        if self.mean is None:
            return img
        if img.shape != self.mean.shape:
            source = self.mean_file or "<array>"
            raise ValueError(f"Mean: the image reaching Mean is {tuple(img.shape)} (CHW) but the mean image {source} "
                             f"is {tuple(self.mean.shape)}; put a Scale to its size first")
        return img.to(torch.float32) - self.mean


@dataclass
class Intensity(Transform):
    """CNTK ``Intensity``: AlexNet's PCA lighting noise, from ``intensityFile`` (EigVal 1x3, EigVec 3x3).

    Each image gets RGB shift = EigVec @ (N(0, intensityStdDev) x EigVal). As in CNTK the shift is
    added to 0..255 pixels although ImageNet1K_intensity.xml's eigenvalues are on the 0..1 scale,
    so with that file the effect is a few hundredths of a level.
    """

    intensity_file: Any = None
    intensity_std_dev: Any = 0.0
    eig_val: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    eig_vec: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    cntk_type: ClassVar[str] = "Intensity"
    path_fields: ClassVar[tuple[str, ...]] = ("intensity_file",)

    def __post_init__(self):
        self.intensity_std_dev = _number("Intensity", "intensityStdDev", self.intensity_std_dev)
        if self.intensity_file is not None:
            root = _xml_root(self.intensity_file)
            self.eig_val = read_opencv_matrix(self.intensity_file, "EigVal", root).reshape(-1)
            self.eig_vec = read_opencv_matrix(self.intensity_file, "EigVec", root)[..., 0]
            if self.eig_val.shape != (3,) or self.eig_vec.shape != (3, 3):
                raise ValueError(f"{self.intensity_file}: EigVal must be 1x3 and EigVec 3x3")

    def apply(self, img, rng, view=0):
        if self.eig_val is None or self.intensity_std_dev == 0 or img.shape[0] != 3:
            return img
        shift = self.eig_vec @ (rng.normal(0.0, self.intensity_std_dev, 3) * self.eig_val)
        out = (img.to(torch.float32) + torch.from_numpy(shift.astype(np.float32))[:, None, None]).clamp_(0, 255)
        return _like(out, img.dtype)


# -- Color, HFlip, Transpose -------------------------------------------------------------------------

def scale_saturation(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """HSV saturation x ``ratio`` (capped at 1) with hue and value kept: CNTK's Color step, closed form.

    With H and V fixed each channel is linear in S: c = V - (V - c), scaled by S'/S. Hand-written
    because torchvision's adjust_saturation blends towards luma grey instead, which also moves V.
    """
    v = x.amax(0, keepdim=True)
    spread = v - x.amin(0, keepdim=True)
    factor = torch.where(spread > 0, torch.minimum(torch.full_like(v, ratio), v / spread.clamp_min(1e-12)), 1.0)
    return v - (v - x) * factor


@dataclass
class Color(Transform):
    """CNTK ``Color``: x' = clip(alpha x + beta) with alpha = 1 + U(-contrastRadius, contrastRadius)
    and beta = U(-brightnessRadius, brightnessRadius) x the image mean; then saturation x
    (1 + U(-saturationRadius, saturationRadius)) in HSV (3-channel images only). Radii in [0, 1].

    Hand-written (one fused line) rather than torchvision's ops: its adjust_brightness multiplies,
    where CNTK's brightness adds a shift, and its adjust_contrast blends towards the mean grey, where
    CNTK's contrast multiplies around 0; the same radii would mean different things. Put Color
    before Mean: like CNTK it clips to 0..255.
    """

    brightness_radius: Any = 0.0
    contrast_radius: Any = 0.0
    saturation_radius: Any = 0.0
    cntk_type: ClassVar[str] = "Color"

    def __post_init__(self):
        for key in ("brightness_radius", "contrast_radius", "saturation_radius"):
            value = _number("Color", _camel(key), getattr(self, key))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Color: {_camel(key)} must be in [0, 1], got {value}")
            setattr(self, key, value)

    def apply(self, img, rng, view=0):
        b, c, s = self.brightness_radius, self.contrast_radius, self.saturation_radius
        if not (b or c or s):
            return img
        x = img.to(torch.float32)
        if b or c:
            beta = float(rng.uniform(-b, b)) * float(x.mean()) if b else 0.0
            alpha = 1.0 + float(rng.uniform(-c, c)) if c else 1.0
            x = (x * alpha + beta).clamp_(0, 255)
        if s and x.shape[0] == 3:
            x = scale_saturation(x, 1.0 + float(rng.uniform(-s, s)))
        return _like(x, img.dtype)


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


TRANSFORM_TYPES: dict[str, type[Transform]] = {
    cls.cntk_type.lower(): cls for cls in (Crop, Scale, Mean, Color, Intensity, HFlip, Transpose)}


class Pipeline:
    """Transforms applied in order. ``copies`` is 10 with a MultiView10 crop (one per view), else 1."""

    def __init__(self, transforms: Sequence[Transform] = ()):
        self.transforms = list(transforms)
        bad = [t for t in self.transforms if not isinstance(t, Transform)]
        if bad:
            raise TypeError(f"Pipeline takes Transform objects, got {type(bad[0]).__name__}")
        self.copies = 10 if any(isinstance(t, Crop) and t.crop_type == "multiview10" for t in self.transforms) else 1

    def apply(self, img: torch.Tensor, rng: np.random.Generator, view: int = 0) -> torch.Tensor:
        for t in self.transforms:
            img = t.apply(img, rng, view)
        return img

    def __call__(self, image: ImageLike, rng: np.random.Generator | int | None = None, view: int = 0) -> torch.Tensor:
        """One HWC image (uint8 or float, numpy or tensor) -> CHW tensor."""
        return self.apply(as_chw(image), np.random.default_rng(rng), view)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"Pipeline({self.transforms!r})"

    def for_evaluation(self) -> "Pipeline":
        """The same geometry without the randomness, for validation when no val transforms are given:
        a random crop becomes a centre crop of its mid-range size (no flip, no aspect jitter); Color,
        Intensity and HFlip are dropped; a Scale with several interpolations keeps its first. Selecting
        the best epoch on randomly cropped val images measures the crops' luck as much as the model."""
        out = []
        for t in self.transforms:
            if isinstance(t, (Color, Intensity, HFlip)):
                continue
            if isinstance(t, Crop) and t.crop_type in ("randomside", "randomarea"):
                mid = lambda r: None if r is None else (r[0] + r[1]) / 2  # noqa: E731
                t = Crop(crop_type="center", side_ratio=mid(t.side_ratio), area_ratio=mid(t.area_ratio),
                         crop_size=t.crop_size and ":".join(map(str, t.crop_size)), hflip=False)
            elif isinstance(t, Scale) and len(t.interpolations) > 1:
                t = replace(t, interpolations=t.interpolations[0])
            out.append(t)
        return Pipeline(out)


def transform_batch(pipeline: Pipeline, images: np.ndarray | torch.Tensor, seed: int = 0, epoch: int = 0,
                    indices: Sequence[int] | None = None) -> torch.Tensor:
    """Apply ``pipeline`` to an NHWC batch (e.g. a packed ``images.npy`` slice) -> NCHW tensor.

    Image i draws from ``sample_rng(seed, indices[i], epoch)``: pass the images' dataset indices to
    get the same result as the map-file reader gives those samples.
    """
    indices = range(len(images)) if indices is None else indices
    if len(indices) != len(images):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")
    out = [pipeline(images[i], sample_rng(seed, int(idx), epoch)) for i, idx in enumerate(indices)]
    return stack_images(out)


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """CHW tensors -> NCHW; a clear error when a pipeline without Scale left them different sizes."""
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(f"images differ in size ({', '.join(map(str, sorted(shapes)[:3]))}); "
                         "add a Scale transform to batch them")
    return torch.stack(list(images))


def build_transform(spec: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Transform:
    """One ``{type = ..., key = value}`` record (CNTK camelCase or our snake_case keys) -> Transform."""
    spec = dict(spec)
    if "type" not in spec:
        raise ValueError(f"transform record has no 'type' key: {spec}")
    type_name = spec.pop("type")
    cls = TRANSFORM_TYPES.get(str(type_name).lower())
    if cls is None:
        known = ", ".join(c.cntk_type for c in TRANSFORM_TYPES.values())
        raise ValueError(f"unknown transform type {type_name!r} (key 'type'); known: {known}")
    params = [f for f in fields(cls) if f.init]
    lookup = {**{f.name: f.name for f in params}, **{_camel(f.name): f.name for f in params}}
    kwargs = {}
    for key, value in spec.items():
        if key not in lookup:
            known = ", ".join(_camel(f.name) for f in params) or "none"
            raise ValueError(f"{cls.cntk_type}: unknown key {key!r}; known keys: {known}")
        kwargs[lookup[key]] = value
    missing = [_camel(f.name) for f in params if f.default is MISSING and f.name not in kwargs]
    if missing:
        raise ValueError(f"{cls.cntk_type}: missing required key {missing[0]!r}")
    for name in cls.path_fields:
        if kwargs.get(name) is not None and base_dir is not None:
            kwargs[name] = Path(base_dir) / Path(str(kwargs[name]))
    return cls(**kwargs)


def transforms_from_config(config: str | os.PathLike | Sequence[Mapping | Transform] | Pipeline, *,
                           section: str | None = None, variables: Mapping[str, Any] | None = None,
                           base_dir: str | os.PathLike | None = None) -> Pipeline:
    """A Pipeline from CNTK config text (str), a config file (Path), or a list of dicts/Transforms.

    Text with several transform lists (a whole .cntk file) needs ``section``: a dotted-path part
    that picks one, e.g. "features2" or "Composite_Test". File names (meanFile, intensityFile) are
    relative to ``base_dir`` (default: the config file's folder, else the working directory);
    ``$ConfigDir$`` is the config file's folder unless ``variables`` says otherwise.
    """
    if isinstance(config, Pipeline):
        return config
    source = "<config>"
    if isinstance(config, os.PathLike):
        path = Path(config)
        source, base_dir = str(path), base_dir if base_dir is not None else path.parent
        variables = {"ConfigDir": str(path.parent), **(variables or {})}
        config = path.read_text(encoding="utf-8")
    if isinstance(config, str):
        name, specs = pick_pipeline(find_pipelines(config, variables, source), section, source)
        where = f"{source} {name or 'transforms'}"
    else:
        specs, where = list(config), "transforms"
    out = []
    for i, spec in enumerate(specs, start=1):
        if isinstance(spec, Transform):
            out.append(spec)
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}, transform {i}: expected a {{ type = ... }} record, got {spec!r}")
        try:
            out.append(build_transform(spec, base_dir))
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"{where}, transform {i}: {exc}") from None
    return Pipeline(out)
