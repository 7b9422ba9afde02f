"""Photometric CNTK transforms: Mean and Intensity (from OpenCV XML files, read here) and Color."""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from gearsight.cntk.transforms.base import Transform, _camel, _choice, _like, _number, as_chw

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


# -- Color ------------------------------------------------------------------------------------------

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
