"""Boxes drawn on images (torchvision.utils.draw_bounding_boxes), and a ground truth | prediction sheet."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#9a6324", "#800000", "#808000", "#000075"]


def draw_boxes(image: np.ndarray, boxes, labels: Sequence[int], classes: Sequence[str],
               scores: Sequence[float] | None = None) -> np.ndarray:
    """HxWx3 uint8 -> the same with boxes; ``labels`` are 0-based class indices."""
    boxes = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    names = [classes[int(k)] for k in labels]
    if scores is not None:
        names = [f"{n} {s:.2f}" for n, s in zip(names, scores)]
    colors = [PALETTE[int(k) % len(PALETTE)] for k in labels]
    width = max(1, round(max(image.shape[:2]) / 250))
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    drawn = draw_bounding_boxes(chw, boxes, labels=names, colors=colors, width=width)
    return drawn.permute(1, 2, 0).numpy()


def save_comparison(path: str | Path, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Path:
    """One row per image: ground truth on the left, prediction on the right; saved as PNG."""
    rows = []
    for truth, pred in pairs:
        gap = np.full((truth.shape[0], 8, 3), 255, np.uint8)
        rows.append(np.concatenate([truth, gap, pred], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
