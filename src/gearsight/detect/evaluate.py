"""COCO box metrics computed by pycocotools itself, on ground truth rebuilt from our records.

Nothing is re-implemented: the numbers are COCOeval's ``stats`` and its ``precision`` array, so
they equal a direct pycocotools run on the same detections (tests/test_detect_eval.py checks this
against coco128's original json).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

from gearsight.detect.coco import to_coco
from gearsight.detect.records import DetectionData, DetectionRecord

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def coco_ground_truth(data: DetectionData):
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = to_coco(data)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        gt.createIndex()
    return gt


def to_coco_detections(outputs: Sequence[dict], records: Sequence[DetectionRecord],
                       category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Model outputs (xyxy boxes, 1-based labels, scores; per record) -> COCO result dicts."""
    results = []
    for out, rec in zip(outputs, records):
        boxes = np.asarray(out["boxes"], np.float64).reshape(-1, 4)
        for (x1, y1, x2, y2), label, score in zip(boxes, np.asarray(out["labels"]), np.asarray(out["scores"])):
            results.append({"image_id": rec.image_id, "category_id": category_ids[int(label) - 1],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def coco_metrics(gt, detections: list[dict], classes: Sequence[str]) -> dict[str, Any]:
    """COCOeval (bbox) of ``detections`` against the COCO object ``gt``: summary stats and per-class AP."""
    from pycocotools.cocoeval import COCOeval

    if not detections:  # loadRes refuses an empty list; no detections score zero everywhere
        return {**{k: 0.0 for k in STAT_NAMES}, "per_class": {c: {"AP": 0.0, "AP50": 0.0} for c in classes},
                "num_detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics: dict[str, Any] = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    metrics["per_class"] = _per_class(ev, classes)
    metrics["num_detections"] = len(detections)
    return metrics


def _per_class(ev, classes: Sequence[str]) -> dict[str, dict[str, float | None]]:
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]; -1 = no ground truth.
    # Area range 0 is "all", max-dets index -1 is 100: the same slice COCOeval's AP line averages.
    precision = ev.eval["precision"]
    table = {}
    for k, name in enumerate(classes):
        p_all, p50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        table[name] = {"AP": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
                       "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else None}
    return table


def evaluate_outputs(data: DetectionData, outputs: Sequence[dict]) -> dict[str, Any]:
    """Metrics of per-record model outputs on ``data``."""
    dets = to_coco_detections(outputs, data.records, data.category_ids)
    return coco_metrics(coco_ground_truth(data), dets, data.classes)


def format_metrics(metrics: dict[str, Any], per_class: bool = True) -> str:
    lines = ["  ".join(f"{k} {metrics[k]:.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))]
    if not per_class:
        return lines[0]
    lines.append(f"{'class':<16} {'AP':>6} {'AP50':>6}")
    for name, row in metrics["per_class"].items():
        ap = "   n/a" if row["AP"] is None else f"{row['AP']:6.3f}"
        ap50 = "   n/a" if row["AP50"] is None else f"{row['AP50']:6.3f}"
        lines.append(f"{name[:16]:<16} {ap} {ap50}")
    return "\n".join(lines)
