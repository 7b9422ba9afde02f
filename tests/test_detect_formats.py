"""One dataset, two file formats, one result: Pascal VOC read directly and the same data converted to a
COCO json by ``gearsight detect convert`` give the same records, so the same training run and the same
mAP (the full-size comparison on BCCD is bench/bench_bccd_formats.py; docs/BENCHMARKS.md, Detection)."""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

from conftest import require_dataset, run_cli
from gearsight.detect.records import AnnotationWarning
from gearsight.detect.sources import load_detection_data
from gearsight.detect.voc import find_voc_root
from test_detect_data import make_voc

TINY = ["--min-size", "96", "--max-size", "128", "--batch-size", "2", "--workers", "0", "--warmup", "2",
        "--lr", "0.01", "--val-split", "none", "--seed", "3"]
FIELDS = ("image", "width", "height", "image_id")
ARRAYS = ("boxes", "labels", "iscrowd", "areas")


def assert_same_records(a, b) -> None:
    assert a.classes == b.classes and a.category_ids == b.category_ids
    assert len(a.records) == len(b.records)
    for ra, rb in zip(a.records, b.records):
        assert [getattr(ra, f) for f in FIELDS] == [getattr(rb, f) for f in FIELDS]
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name), err_msg=f"{ra.image}: {name}")


def test_bccd_converted_to_coco_json_reads_back_as_the_same_records(tmp_path):
    bccd = require_dataset("bccd")
    images = find_voc_root(bccd) / "JPEGImages"
    for split, n in (("train", 205), ("test", 72)):
        out = tmp_path / f"{split}.json"
        proc = run_cli("detect", "convert", bccd, "--split", split, "--out", out)
        assert f"{n} images" in proc.stdout
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnnotationWarning)  # BCCD's two point boxes, dropped by the VOC reader
            voc = load_detection_data(bccd, split)
            coco = load_detection_data(out, "all", images=images)
        assert not coco.issues  # the dropped boxes are not written: nothing left to fix on the way back
        assert_same_records(voc, coco)


def _train(data, run, *extra):
    run_cli("detect", "train", data, "--out", run, "--epochs", "2", *extra, *TINY)
    with open(run / "metrics.csv", newline="") as f:
        return [{k: row[k] for k in ("loss", "loss_classifier", "loss_box_reg", "step")} for row in csv.DictReader(f)]


def test_voc_and_its_coco_json_train_and_evaluate_identically(tmp_path):
    root = make_voc(tmp_path / "voc", n=8)
    for split in ("train", "test"):
        run_cli("detect", "convert", root, "--split", split, "--out", tmp_path / f"{split}.json")
    images = root / "JPEGImages"
    voc_rows = _train(root, tmp_path / "voc_run", "--train-split", "train")
    coco_rows = _train(tmp_path / "train.json", tmp_path / "coco_run", "--images", images, "--train-split", "all")
    assert len(voc_rows) == 2 and voc_rows == coco_rows  # same seed, same records: the same steps, to the digit
    reports = []
    for name, data in (("voc", [root, "--split", "test"]), ("coco", [tmp_path / "test.json", "--images", images,
                                                                       "--split", "all"])):
        run_cli("detect", "evaluate", tmp_path / f"{name}_run" / "model.safetensors", *data,
                "--out", tmp_path / f"{name}_eval", "--draw", "0")
        reports.append(json.loads((tmp_path / f"{name}_eval" / "report.json").read_text()))
    for key in ("AP", "AP50", "AP75", "images", "boxes"):
        assert reports[0][key] == pytest.approx(reports[1][key], abs=1e-12), key
    # the same model: every detection (image id, category id, box, score) is the same
    detections = [json.loads((tmp_path / f"{name}_eval" / "detections.json").read_text()) for name in ("voc", "coco")]
    assert detections[0] and detections[0] == detections[1]
