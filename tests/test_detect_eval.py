"""Our COCO metrics equal pycocotools run directly on the original coco128 json, same detections."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from conftest import require_dataset
from gearsight.detect.evaluate import STAT_NAMES, evaluate_outputs, to_coco_detections
from gearsight.detect.sources import load_detection_data
from test_detect_data import make_voc


def _noisy_outputs(data, seed: int = 0) -> list[dict]:
    """Model-style outputs: every ground-truth box jittered, sometimes mislabelled, plus false alarms."""
    rng = np.random.default_rng(seed)
    outputs = []
    for rec in data.records:
        boxes = rec.boxes + rng.normal(0, 4, rec.boxes.shape) * (rec.boxes[:, 2:] - rec.boxes[:, :2]).mean() / 40
        labels = np.where(rng.random(len(rec.labels)) < 0.15, rng.integers(0, len(data.classes), len(rec.labels)),
                          rec.labels)
        fp = rng.uniform(0, 1, (3, 4)) * [rec.width, rec.height, rec.width, rec.height]
        fp = np.concatenate([fp[:, :2].clip(max=fp[:, 2:]), fp[:, :2].clip(min=fp[:, 2:])], axis=1)
        outputs.append({"boxes": np.concatenate([boxes, fp]),
                        "labels": np.concatenate([labels, rng.integers(0, len(data.classes), 3)]) + 1,
                        "scores": rng.uniform(0.05, 1, len(boxes) + 3)})
    return outputs


def _pycocotools_stats(json_path, detections, cat_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(json_path))
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        if cat_ids:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_metrics_equal_pycocotools_on_the_original_coco128_json():
    root = require_dataset("coco128")
    json_path = root / "annotations/instances_train2017.json"
    data = load_detection_data(json_path)
    outputs = _noisy_outputs(data)
    ours = evaluate_outputs(data, outputs)
    detections = to_coco_detections(outputs, data.records, data.category_ids)
    theirs = _pycocotools_stats(json_path, detections)
    assert 0.1 < ours["AP"] < 0.9  # a non-trivial case
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], theirs, rtol=0, atol=1e-12)
    for name in ("person", "car", "teddy bear"):  # per-class AP == COCOeval restricted to that category
        cat_id = data.category_ids[data.classes.index(name)]
        stats = _pycocotools_stats(json_path, detections, [cat_id])
        assert ours["per_class"][name]["AP"] == pytest.approx(stats[0], abs=1e-12)
        assert ours["per_class"][name]["AP50"] == pytest.approx(stats[1], abs=1e-12)
    assert ours["per_class"]["toaster"]["AP"] is None  # no ground truth in coco128


def test_perfect_and_empty_detections(tmp_path):
    data = load_detection_data(make_voc(tmp_path / "voc", n=4))
    perfect = [{"boxes": r.boxes, "labels": r.labels + 1, "scores": np.ones(len(r.labels))} for r in data.records]
    metrics = evaluate_outputs(data, perfect)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["per_class"]["dog"]["AP50"] == pytest.approx(1.0)
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)} for _ in data.records]
    assert evaluate_outputs(data, empty)["AP50"] == 0.0
