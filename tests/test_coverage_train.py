"""Training and prediction options a user reaches for, run end to end on real image files.

The data is drawn here, not read from ../shared/data: a dark disc on a noisy grey photo, class
"left" or "right" by the half it sits in. Mirroring turns one class into the other, which makes
the flip test-time augmentation measurable: averaged over an image and its mirror, a left image and
its mirrored twin get the same prediction, so on mirror pairs TTA scores exactly one half.
"""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import load_file

import gearsight
from conftest import REPO, run_cli
from gearsight.config import TrainConfig

CLASSES = ["left", "right"]
SMALL = ["--widths", "8,16,32", "--batch-size", "16", "--threads", "1", "--quiet"]


def disc_photo(rng: np.random.Generator, side: str, size: int = 40) -> Image.Image:
    pixels = rng.normal(150, 25, (size, size, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    r = int(rng.integers(5, 8))
    x = int(rng.integers(r + 1, size // 2 - r)) + (size // 2 if side == "right" else 0)
    y = int(rng.integers(r + 1, size - r - 1))
    ImageDraw.Draw(img).ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
    return img


def write_split(folder: Path, rng, split: str, n_per_class: int, *, swap: bool = False,
                mirror_pairs: bool = False) -> list[list[str]]:
    """Rows path,label,split. ``swap``: every label wrong (left drawn, right written). ``mirror_pairs``:
    each left photo saved again mirrored as a right one."""
    rows = []
    for i in range(n_per_class):
        for side in CLASSES:
            if mirror_pairs and side == "right":
                continue
            img = disc_photo(rng, side)
            label = CLASSES[1 - CLASSES.index(side)] if swap else side
            path = folder / f"{split}{'-swapped' if swap else ''}-{side}-{i}.png"
            img.save(path)
            rows.append([str(path), label, split])
            if mirror_pairs:
                twin = folder / f"{split}-mirror-{i}.png"
                img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(twin)
                rows.append([str(twin), "right", split])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, list]:
    folder = tmp_path_factory.mktemp("discs")
    rng = np.random.default_rng(0)
    return {"train": write_split(folder, rng, "train", 40), "val": write_split(folder, rng, "val", 8),
            "val_swapped": write_split(folder, rng, "val", 8, swap=True),
            "test": write_split(folder, rng, "test", 8, mirror_pairs=True)}


@pytest.fixture(scope="module")
def packed(photos, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("discs_packed")
    source = write_csv(work / "discs.csv", photos["train"] + photos["val"] + photos["test"])
    run_cli("pack", source, work / "packed", "--size", "32", "--quiet")
    return work / "packed"


# A config file as a user writes one; tta off so that val accuracy can see left from right.
CONFIG = {"widths": [8, 16, 32], "batch_size": 16, "lr": 0.1, "label_smoothing": 0.0, "flip": False,
          "translate": 2, "tta": False, "seed": 3, "epochs": 9, "threads": 1}


@pytest.fixture(scope="module")
def trained(packed, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("discs_run")
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    proc = run_cli("train", packed, "--out", work / "run", "--config", config, "--epochs", "5", "--quiet")
    return {"run": work / "run", "model": work / "run" / "model.safetensors", "stdout": proc.stdout}


def test_train_config_file_is_used_and_dumped_back(trained, packed, tmp_path):
    run = trained["run"]
    dumped = yaml.safe_load((run / "config.yaml").read_text())
    assert dumped == asdict(TrainConfig().update(**{**CONFIG, "epochs": 5}))  # the flag beats the file
    assert _epochs(run) == list(range(5))
    assert gearsight.load(trained["model"]).spec.arch_config["widths"] == [8, 16, 32]
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearning_rate: 0.1\n")
    proc = run_cli("train", packed, "--out", tmp_path / "r", "--config", bad, check=False)
    assert proc.returncode == 2 and "unknown training option 'learning_rate'" in proc.stderr


def test_evaluate_no_tta_scores_what_flip_averaging_cannot(trained, packed, tmp_path):
    from gearsight.workflow import evaluate_packed

    plain = run_cli("evaluate", trained["model"], packed, "--no-tta", "--out", tmp_path / "plain")
    report = _report(tmp_path / "plain")
    assert report["accuracy"] >= 0.9 and report["n"] == 16, plain.stdout
    # The default (flip TTA), the same call the CLI makes: mirror pairs with opposite labels get
    # equal flip-averaged logits, so exactly one of each pair is right.
    tta = evaluate_packed(trained["model"], packed, "test", tmp_path / "tta", device="cpu")
    assert tta["accuracy"] == pytest.approx(0.5, abs=1e-9) and tta["n"] == 16


def test_predict_proba_on_files_images_and_arrays(trained, photos, packed):
    clf = gearsight.load(trained["model"])
    rows = photos["test"]
    paths = [r[0] for r in rows]
    labels = np.array([CLASSES.index(r[1]) for r in rows])
    probs = clf.predict_proba(paths, tta=False)
    assert probs.shape == (16, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == labels).mean() >= 0.9
    pil = [Image.open(p) for p in paths]
    np.testing.assert_allclose(clf.predict_proba(pil, tta=False), probs, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba([np.asarray(im) for im in pil], tta=False), probs, atol=1e-6)
    # Packing and predict_proba preprocess alike: the packed test split scores the same.
    from gearsight.data.pack import PackedDataset

    ds = PackedDataset(packed)
    by_path = dict(zip(ds.paths("test"), clf.predict_packed(ds.subset("test")[0], tta=False)))
    np.testing.assert_allclose(np.stack([by_path[p] for p in paths]), probs, atol=1e-5)
    flipped = clf.predict_proba(paths, tta=True)
    np.testing.assert_allclose(flipped[0::2], flipped[1::2], atol=1e-5)  # (photo, mirror) pairs
    assert np.abs(flipped - probs).max() > 0.1
    assert clf.predict_proba([]).shape == (0, 2)


def test_patience_stops_when_val_accuracy_stops_improving(photos, tmp_path):
    """Val labels all wrong: the better the model learns, the lower its val accuracy. One step per
    epoch, the first at a near-zero lr: epoch 0 is the untrained model (about half right), the
    best; later epochs only get worse, which patience must notice."""
    source = write_csv(tmp_path / "swapped.csv", photos["train"] + photos["val_swapped"])
    run_cli("pack", source, tmp_path / "packed", "--size", "32", "--quiet")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "batch_size": 80, "lr_start": 1e-4, "warmup": 0.25}))
    proc = run_cli("train", tmp_path / "packed", "--out", tmp_path / "run", "--config", config,
                   "--epochs", "12", "--patience", "2")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    acc = [float(r["val_acc"]) for r in rows]
    best = max(i for i, a in enumerate(acc) if a == max(acc))  # ties: the later epoch
    assert "early stop: no better val accuracy for 2 epochs" in proc.stdout, proc.stdout
    assert len(rows) == best + 3 < 12, acc
    assert gearsight.load(tmp_path / "run" / "model.safetensors").spec.extra["best_epoch"] == best


def _train_ema(packed: Path, run: Path, *extra: str) -> list[str]:
    return ["train", str(packed), "--out", str(run), "--config", str(run.parent / "cfg.yaml"), "--epochs", "6",
            "--ema", "0.9", "--keep", "last", *extra]


def test_ema_weights_are_saved_and_survive_a_resume(packed, trained, tmp_path):
    (tmp_path / "cfg.yaml").write_text((trained["run"] / "config.yaml").read_text())
    whole = tmp_path / "whole"
    run_cli(*_train_ema(packed, whole))
    state = torch.load(whole / "last.pt", weights_only=True)
    steps = 6 * -(-80 // 16)  # epochs x batches of the 80 training photos
    assert int(state["ema"]["n_averaged"]) == steps
    saved = load_file(str(whole / "model.safetensors"))
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
    raw = state["model"]
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, ema[name])  # the model file holds the averaged weights
    assert max((saved[k] - raw[k]).abs().max().item() for k in saved if raw[k].is_floating_point()) > 1e-3

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "gearsight", *_train_ema(packed, cut)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and _logged(cut) < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= _logged(cut) < 6, "training finished before it could be interrupted"
    out = run_cli(*_train_ema(packed, cut, "--resume"))
    assert "resumed from" in out.stdout
    resumed = torch.load(cut / "last.pt", weights_only=True)
    assert int(resumed["ema"]["n_averaged"]) == steps  # the average went on, it did not restart
    for name, tensor in load_file(str(cut / "model.safetensors")).items():
        torch.testing.assert_close(tensor, saved[name], atol=1e-5, rtol=1e-4)


def _epochs(run: Path) -> list[int]:
    return [int(r["epoch"]) for r in csv.DictReader(open(run / "metrics.csv"))]


def _logged(run: Path) -> int:
    path = run / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def _report(folder: Path) -> dict:
    import json

    return json.loads((folder / "report.json").read_text())
