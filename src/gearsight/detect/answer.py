"""One image's detections as the JSON answer of ``Detector.predict``, ``gearsight detect predict``
and the server's ``POST /detect``: one function so the three cannot drift. Torch-free (numpy only),
so the serving process can import it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def detection_answer(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                     min_score: float, scale: float = 1.0) -> dict[str, Any]:
    """``{"boxes": [[x1, y1, x2, y2], ...], "labels": [name, ...], "scores": [...]}`` of the boxes
    scoring at least ``min_score``. ``labels`` are the model's 1-based class indices (0 is torchvision's
    background); ``scale`` multiplies the boxes (an image decoded at 1/2..1/8 scale: back to its pixels).
    Boxes are rounded to 0.01 px, scores to 4 decimals."""
    keep = np.asarray(scores) >= min_score
    return {"boxes": np.round(np.asarray(boxes)[keep] * scale, 2).tolist(),
            "labels": [classes[int(k) - 1] for k in np.asarray(labels)[keep]],
            "scores": np.round(np.asarray(scores)[keep], 4).tolist()}
