"""What every CNTK transform shares: the Transform base, per-sample randomness, HWC -> CHW, and the
parsing of CNTK's option forms (``0.8:1.0`` ranges, ``true``/``1`` booleans, choices), whose errors
name the transform and the CNTK key."""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping, Union

import numpy as np
import torch

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
