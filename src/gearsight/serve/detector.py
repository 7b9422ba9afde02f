"""The served detector: an ONNX Runtime session of an exported Faster R-CNN (gearsight.detect.export).

No torch here either. The graph holds torchvision's own preprocessing (resize to the model's
min_size, ImageNet normalization), so the server only decodes the image to RGB and scales it to
0..1; boxes come back in the sent image's pixels.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from gearsight.checkpoint import ModelSpec
from gearsight.data.decode import DecodeError, decode_image
from gearsight.serve.errors import RequestError, too_large
from gearsight.serve.model import SPEC_KEY, _session


class OnnxDetector:
    def __init__(self, path: str | os.PathLike, threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"detector file not found: {path}")
        self.session = _session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ValueError(f"{path}: ONNX file without gearsight metadata (export it with `gearsight detect export`)")
        self.spec = ModelSpec.from_json(meta[SPEC_KEY], str(path))
        if self.spec.extra.get("task") != "detection":
            raise ValueError(f"{path}: not a detector (a classifier is served as the main model)")
        self.classes = list(self.spec.classes)
        self.name = path.stem
        self.version = (meta.get("source_sha256") or hashlib.sha256(path.read_bytes()).hexdigest())[:12]
        self.input_name = self.session.get_inputs()[0].name

    def detect(self, rgb: np.ndarray, min_score: float) -> dict:
        """``H x W x 3`` uint8 -> ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}``."""
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        boxes, labels, scores = self.session.run(None, {self.input_name: image})
        keep = scores >= min_score
        return {"boxes": np.round(boxes[keep], 2).tolist(),
                "labels": [self.classes[int(k) - 1] for k in labels[keep]],
                "scores": np.round(scores[keep], 4).tolist()}


def image_pixels(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> RGB uint8, with decode_image's rules and a 4xx naming the problem."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except DecodeError as exc:
        if "pixel limit" in exc.reason:
            raise too_large(f"{name}: {exc.reason}") from None
        raise RequestError(f"{name}: {exc.reason}") from None


def float_pixels(arr: np.ndarray, layout: str, name: str, max_pixels: int) -> np.ndarray:
    """Raw 0..255 pixel values sent as float32, ``hwc`` (default) or ``chw`` -> RGB uint8."""
    if layout == "chw" and arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise RequestError(f"{name}: needs shape [H, W, 3] ('hwc') or [3, H, W] ('chw'), got {list(arr.shape)}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise too_large(f"{name}: {arr.shape[1]}x{arr.shape[0]} pixels exceed the {max_pixels:,}-pixel limit")
    if arr.min() < 0 or arr.max() > 255:
        raise RequestError(f"{name}: pixel values must be 0..255, got {arr.min():g}..{arr.max():g}")
    return np.rint(arr).astype(np.uint8)
