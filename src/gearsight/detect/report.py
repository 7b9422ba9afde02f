"""``detect evaluate``: run a detector on a split, write report.json and a ground truth | prediction PNG."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gearsight.detect.draw import draw_boxes, save_comparison
from gearsight.detect.evaluate import coco_ground_truth, coco_metrics, to_coco_detections
from gearsight.detect.predict import Detector
from gearsight.detect.records import DetectionData
from gearsight.files import atomic_write
from gearsight.image.decode import decode_image

DRAW_MIN_SCORE = 0.5  # the sheet shows confident boxes; the metrics use every box


def evaluate_detector(detector: Detector, data: DetectionData, out_dir: str | Path | None = None, *,
                      draw: int = 4, source: str = "") -> dict[str, Any]:
    """COCO metrics of ``detector`` on ``data``; ``out_dir`` gets report.json, detections.json, predictions.png."""
    if data.classes != detector.classes:
        raise ValueError(f"{source or 'data'}: classes {data.classes} differ from the model's {detector.classes}")
    t0 = time.perf_counter()
    outputs = detector.raw_outputs([r.image for r in data.records])
    seconds = time.perf_counter() - t0
    detections = to_coco_detections(outputs, data.records, data.category_ids)
    report = coco_metrics(coco_ground_truth(data), detections, data.classes)
    report.update(images=len(data.records), boxes=sum(len(r.boxes) for r in data.records), data=source,
                  seconds_per_image=seconds / max(1, len(data.records)), annotation_issues=data.issues)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=2)
        atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(text))
        # COCO results format: pycocotools' loadRes reads it, so anyone can re-check the numbers.
        dets = json.dumps(detections)
        atomic_write(out_dir / "detections.json", lambda tmp: Path(tmp).write_text(dets))
        if draw > 0 and data.records:
            report["sheet"] = str(draw_sheet(out_dir / "predictions.png", data, outputs[:draw], detector.classes))
    return report


def draw_sheet(path: Path, data: DetectionData, outputs: list[dict], classes: list[str]) -> Path:
    pairs = []
    for rec, out in zip(data.records, outputs):
        pixels = decode_image(rec.image)
        keep = out["scores"] >= DRAW_MIN_SCORE
        truth = draw_boxes(pixels, rec.boxes, rec.labels, classes)
        pred = draw_boxes(pixels, out["boxes"][keep], out["labels"][keep] - 1, classes, out["scores"][keep])
        pairs.append((truth, pred))
    return save_comparison(path, pairs)
