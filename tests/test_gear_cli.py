"""The CLI end to end on a small subset of the real gear photos: pack -> train -> evaluate -> predict."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gearsight
from conftest import REPO, run_cli, write_gear_subset

CLASSES = ("axes", "boots", "tents")


@pytest.fixture(scope="module")
def subset_csv(gear_dir, tmp_path_factory) -> Path:
    """Up to 40 train / 8 val / 8 test photos of three classes, taken from THE split.csv."""
    out = tmp_path_factory.mktemp("gear_subset") / "subset.csv"
    return write_gear_subset(gear_dir, out, CLASSES, {"train": 40, "val": 8, "test": 8})


@pytest.fixture(scope="module")
def trained(subset_csv, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("gear_run")
    packed, run = work / "packed", work / "run"
    proc = run_cli("pack", subset_csv, packed, "--size", "48", "--quiet")
    assert "skipped 0" in proc.stdout
    run_cli("train", packed, "--out", run, "--epochs", "4", "--batch-size", "32", "--quiet")
    return {"packed": packed, "run": run, "model": run / "model.safetensors"}


def test_train_writes_model_metrics_curves_and_config(trained):
    run = trained["run"]
    for name in ("model.safetensors", "last.pt", "metrics.csv", "curves.png", "config.yaml"):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert all(float(r["img_per_s"]) > 0 and 0 <= float(r["data_wait"]) < 1 for r in rows)
    assert Image.open(run / "curves.png").size[0] > 100


def test_evaluate_report_matches_its_own_confusion_matrix(trained, tmp_path):
    proc = run_cli("evaluate", trained["model"], trained["packed"], "--split", "test", "--out", tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["classes"] == list(CLASSES)
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == report["n"] == 24
    assert report["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for i, name in enumerate(CLASSES):
        stats = report["per_class"][name]
        assert set(stats) >= {"accuracy", "precision", "recall", "f1", "support"}
        assert stats["support"] == cm[i].sum() == 8
        assert stats["accuracy"] == pytest.approx(cm[i, i] / cm[i].sum())
    assert "accuracy" in proc.stdout and "tents" in proc.stdout
    assert (tmp_path / "confusion.png").is_file()


def test_predict_cli_json_and_python_api_agree(trained, gear_dir, tmp_path):
    photos = sorted((gear_dir / "boots").iterdir())[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    proc = run_cli("predict", trained["model"], *photos, bad, "--json", "--top-k", "2", check=False)
    assert proc.returncode == 1  # one input failed, the others were still answered
    results = json.loads(proc.stdout)
    assert [r["path"] for r in results] == [str(p) for p in photos] + [str(bad)]
    assert "error" in results[2] and "not an image" in results[2]["error"]
    clf = gearsight.load(trained["model"])
    for r, photo in zip(results, photos):
        assert len(r["top_k"]) == 2 and r["label"] in CLASSES
        by_path = clf.predict(photo)
        by_pil = clf.predict(Image.open(photo))
        by_array = clf.predict(np.asarray(Image.open(photo).convert("RGB")))
        assert by_path.label == by_pil.label == by_array.label == r["label"]
        assert by_path.probability == pytest.approx(r["probability"], abs=1e-5)
    batch = clf.predict(list(photos))
    assert [p.label for p in batch] == [r["label"] for r in results[:2]]


def test_evaluate_refuses_data_packed_at_another_size(trained, subset_csv, tmp_path):
    run_cli("pack", subset_csv, tmp_path / "p32", "--size", "32", "--quiet")
    proc = run_cli("evaluate", trained["model"], tmp_path / "p32", check=False)
    assert proc.returncode == 2 and "--size 48" in proc.stderr


def test_resume_after_kill_finishes_the_same_run(trained, tmp_path):
    """Kill training mid-run, resume, and end with every epoch logged once and a loadable model."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "gearsight", "train", str(trained["packed"]), "--out", str(run),
            "--epochs", "6", "--batch-size", "32", "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not _epochs_logged(run) >= 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _epochs_logged(run)
    assert 2 <= done_before < 6, "training finished before it could be interrupted"
    out = run_cli("train", trained["packed"], "--out", run, "--epochs", "6", "--batch-size", "32",
                  "--quiet", "--resume")
    assert "resumed" in out.stdout
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert epochs == list(range(6))  # rows past the checkpoint were dropped, none repeat
    assert gearsight.load(run / "model.safetensors").classes == list(CLASSES)


def _epochs_logged(run: Path) -> int:
    path = run / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def test_pack_to_ctf_then_train_from_ctf(subset_csv, tmp_path):
    """The CNTK data-packing path: images -> CTF text -> training straight from the CTF files."""
    out = tmp_path / "gear.ctf"
    proc = run_cli("pack", subset_csv, out, "--format", "ctf", "--size", "24", "--quiet")
    assert "gear.train.ctf" in proc.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == len(subset_csv.read_text().splitlines()) - 1 and lines[0].startswith("|labels ") and "|features " in lines[0]
    assert len(lines[0].split("|features ")[1].split()) == 24 * 24 * 3
    run_cli("train", tmp_path / "gear.train.ctf", "--val", tmp_path / "gear.val.ctf", "--image-shape", "24,24,3",
            "--out", tmp_path / "run", "--epochs", "2", "--batch-size", "32", "--quiet")
    clf = gearsight.load(tmp_path / "run" / "model.safetensors")
    assert clf.classes == list(CLASSES) and clf.spec.input_size == 24
    # The pack padded with white, so inference must too (it used to record stretch/0 and stretch photos).
    assert (clf.spec.resize, clf.spec.pad_fill) == ("pad", 255)
    assert json.loads((tmp_path / "gear.pack.json").read_text()) == {
        "classes": list(CLASSES), "size": 24, "resize": "pad", "fill": 255}


def test_train_from_ctf_reads_the_geometry_pack_wrote(subset_csv, tmp_path):
    """No --image-shape: the size comes from OUT.pack.json; a crop pack is recorded as crop."""
    run_cli("pack", subset_csv, tmp_path / "g.ctf", "--format", "ctf", "--size", "16", "--resize", "crop", "--quiet")
    run_cli("train", tmp_path / "g.train.ctf", "--val", tmp_path / "g.val.ctf", "--out", tmp_path / "run",
            "--epochs", "1", "--batch-size", "32", "--quiet")
    spec = gearsight.load(tmp_path / "run" / "model.safetensors").spec
    assert (spec.input_size, spec.resize, spec.classes) == (16, "crop", list(CLASSES))


def test_the_ctf_sidecars_are_the_library_s_from_python_too(subset_csv, tmp_path):
    """workflow.pack_ctf writes OUT.classes.txt and OUT.pack.json; workflow.train_ctf, given neither
    shape nor classes nor geometry, reads them (what `gearsight train X.ctf` does)."""
    from gearsight import workflow

    meta, written = workflow.pack_ctf(subset_csv, tmp_path / "g.ctf", size=16, resize="crop", progress=False)
    assert [p.name for p in written] == ["g.ctf", "g.train.ctf", "g.val.ctf", "g.test.ctf"]
    assert workflow.class_names_for(tmp_path / "g.val.ctf") == list(CLASSES) == meta["classes"]
    assert workflow.class_names_for(tmp_path / "g.val.ctf", "a,b") == ["a", "b"]
    assert workflow.ctf_sidecars(tmp_path / "g.train.ctf") == {"classes": list(CLASSES), "size": 16,
                                                               "resize": "crop", "fill": 255}
    workflow.train_ctf(tmp_path / "g.train.ctf", tmp_path / "g.val.ctf", tmp_path / "run", progress=False,
                       epochs=1, batch_size=32)
    spec = gearsight.load(tmp_path / "run" / "model.safetensors").spec
    assert (spec.input_size, spec.resize, spec.pad_fill, spec.classes) == (16, "crop", 255, list(CLASSES))
