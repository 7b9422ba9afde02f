"""`gearsight detect` end to end in real subprocesses: train (and resume) on a few coco128 images,
evaluate (equal to pycocotools on the written detections), predict with drawings, and user errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import run_cli
from test_detect_data import coco128_subset
from test_detect_eval import _pycocotools_stats

TINY = ["--min-size", "96", "--max-size", "128", "--batch-size", "2", "--workers", "0", "--warmup", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect_cli")
    json_path, images = coco128_subset(tmp, 6)
    run = tmp / "run"
    proc = run_cli("detect", "train", json_path, "--images", images, "--out", run, "--train-split", "all",
                   "--val-split", "all", "--epochs", "1", *TINY)
    assert "anchors [[" in proc.stdout and '"best_epoch": 1' in proc.stdout
    return tmp, json_path, images, run


def test_train_writes_model_log_and_resumes(trained):
    tmp, json_path, images, run = trained
    assert {"model.safetensors", "last.pt", "metrics.csv", "config.json"} <= {p.name for p in run.iterdir()}
    proc = run_cli("detect", "train", json_path, "--images", images, "--out", run, "--train-split", "all",
                   "--val-split", "all", "--epochs", "2", "--resume", *TINY)
    assert "resumed from" in proc.stdout and "epoch 1" in proc.stdout
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["step"]) > float(rows[0]["step"])
    assert all(r["val_AP"] != "" for r in rows)
    from gearsight.modelfile import read_spec

    spec = read_spec(run / "model.safetensors")
    assert spec.arch == "fasterrcnn_mobilenet_v3_large_fpn" and spec.arch_config["min_size"] == 96
    assert len(spec.classes) == 80 and spec.extra["task"] == "detection"


def test_evaluate_equals_pycocotools_on_its_detections(trained):
    tmp, json_path, images, run = trained
    out = tmp / "eval"
    proc = run_cli("detect", "evaluate", run / "model.safetensors", json_path, "--images", images,
                   "--split", "all", "--out", out)
    assert "AP50" in proc.stdout and (out / "predictions.png").stat().st_size > 1000
    report = json.loads((out / "report.json").read_text())
    detections = json.loads((out / "detections.json").read_text())
    assert detections and report["images"] == 6
    theirs = _pycocotools_stats(json_path, detections)
    np.testing.assert_allclose([report[k] for k in ("AP", "AP50", "AP75")], theirs[:3], rtol=0, atol=1e-12)


def test_predict_prints_json_and_draws(trained):
    tmp, json_path, images, run = trained
    files = sorted(images.glob("*.jpg"))[:2]
    proc = run_cli("detect", "predict", run / "model.safetensors", *files, "--min-score", "0", "--draw", tmp / "drawn")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(f) for f in files]
    assert all(len(line["boxes"]) == len(line["labels"]) == len(line["scores"]) > 0 for line in lines)
    assert all(len(box) == 4 for box in lines[0]["boxes"])
    assert sorted(p.name for p in (tmp / "drawn").iterdir()) == [f"{f.stem}.png" for f in files]


def test_user_errors_are_one_clear_line(trained, tmp_path):
    tmp, json_path, images, run = trained
    proc = run_cli("detect", "predict", run / "model.safetensors", tmp_path / "nope.jpg", check=False)
    assert proc.returncode == 2 and "image file not found: " in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("detect", "evaluate", tmp_path / "none.safetensors", json_path, check=False)
    assert proc.returncode == 2 and "model file not found" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg", "width": 9, "height": 9}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    proc = run_cli("detect", "train", bad, "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "bad.json: image 1 (gone.jpg): image file not found" in proc.stderr
