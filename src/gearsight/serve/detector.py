"""The served detector: an ONNX Runtime session of an exported Faster R-CNN (gearsight.detect.export).

No torch here either. The graph holds torchvision's own preprocessing (resize to the model's
min_size, ImageNet normalization), so the server only decodes the image to RGB and scales it to
0..1; boxes come back in the sent image's pixels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gearsight.detect.answer import detection_answer
from gearsight.serve.model import open_onnx


class OnnxDetector:
    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.session, self.spec, self.version = open_onnx(path, threads, "gearsight detect export")
        if self.spec.extra.get("task") != "detection":
            raise ValueError(f"{path}: not a detector (a classifier is served as the main model)")
        self.classes = list(self.spec.classes)
        self.name = Path(path).stem
        self.input_name = self.session.get_inputs()[0].name

    def detect(self, rgb: np.ndarray, min_score: float, scale: float = 1.0) -> dict:
        """``H x W x 3`` uint8 -> ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}``;
        ``scale`` multiplies the boxes (from decoded pixels back to the sent image's)."""
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        boxes, labels, scores = self.session.run(None, {self.input_name: image})
        return detection_answer(boxes, labels, scores, self.classes, min_score, scale)
