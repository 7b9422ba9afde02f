"""COCO detection data as image-classification records, for the "same exercise on COCO" study.

Two ways to turn boxes into one label per picture:
- ``dominant``: the whole image, labelled by the category covering the most box area (the naive
  approach; many objects per image make the label arbitrary);
- ``crops``: one picture per object box, cut out and saved under ``crop_dir/<class>/``.
Crowd boxes are skipped in both; images without boxes (dominant) and boxes under ``min_side``
pixels (crops) are skipped too, and every skip is counted in one AnnotationWarning.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from gearsight.detect.coco import read_coco
from gearsight.detect.records import AnnotationWarning


def coco_to_classification_records(coco_json: str | Path, images_dir: str | Path | None = None,
                                   mode: str = "dominant", crop_dir: str | Path | None = None,
                                   min_side: int = 16) -> list[tuple[Path, str]]:
    """``(image path, class name)`` records from a COCO instances json (see the module docstring)."""
    if mode not in ("dominant", "crops"):
        raise ValueError(f"mode must be 'dominant' or 'crops', not {mode!r}")
    if mode == "crops" and crop_dir is None:
        raise ValueError("mode='crops' needs crop_dir, the folder the crops are written to")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)  # box fixes are reported by read_coco's issues
        data = read_coco(coco_json, images_dir)
    records: list[tuple[Path, str]] = []
    skipped = 0
    for rec in data.records:
        keep = ~rec.iscrowd
        boxes, labels = rec.boxes[keep], rec.labels[keep]
        if mode == "dominant":
            if len(labels) == 0:
                skipped += 1
                continue
            area = np.bincount(labels, weights=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
            records.append((rec.image, data.classes[int(area.argmax())]))
            continue
        skipped += _write_crops(rec, boxes, labels, data.classes, Path(crop_dir), min_side, records)
    if skipped:
        what = "images without boxes" if mode == "dominant" else f"boxes under {min_side} px"
        warnings.warn(f"{coco_json}: skipped {skipped} {what}", AnnotationWarning, stacklevel=2)
    return records


def _write_crops(rec, boxes, labels, classes, crop_dir: Path, min_side: int, records: list) -> int:
    skipped = 0
    with Image.open(rec.image) as im:
        im = im.convert("RGB")
        for k, (box, label) in enumerate(zip(boxes, labels)):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            if min(x2 - x1, y2 - y1) < min_side:
                skipped += 1
                continue
            out = crop_dir / classes[label] / f"{rec.image_id}_{k}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            im.crop((x1, y1, x2, y2)).save(out, quality=95)
            records.append((out, classes[label]))
    return skipped
