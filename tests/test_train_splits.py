"""train_splits: the final fit on train + val (a recipe chosen on val, then trained on every labelled
photo but the test split's)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gearsight import workflow
from gearsight.data.pack import SPLITS, PackWriter
from gearsight.predict import Classifier


def _pack(out, seed: int = 0):
    """Train: dark images only; val: bright squares only; test: both. Only a run that trains on val
    can know what a square is."""
    rng = np.random.default_rng(seed)
    rows = [(0, "train")] * 96 + [(1, "val")] * 96 + [(0, "test"), (1, "test")] * 16
    writer = PackWriter(out, len(rows), 32)
    for i, (label, split) in enumerate(rows):
        img = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
        if label:
            img[8:24, 8:24] += 150
        writer.add(img, label, SPLITS.index(split), {"path": f"img{i}.png", "label": str(label), "split": split})
    writer.finish(["dark", "square"], "pad", 0, [])
    return out


def _test_accuracy(run) -> float:
    from gearsight.data.pack import PackedDataset

    x, y = PackedDataset(run.parent / "pack").subset("test")
    return float((Classifier.load(run / "model.safetensors").predict_packed(x).argmax(1) == y).mean())


@pytest.mark.parametrize("splits, learns_squares", [(["train"], False), (["train", "val"], True)])
def test_train_splits_decides_what_trains_and_train_val_keeps_the_last_epoch(tmp_path, splits, learns_squares):
    pack = _pack(tmp_path / "pack")
    summary = workflow.train_packed(pack, tmp_path / "run", progress=False, widths=[8, 16, 16], epochs=4,
                                    batch_size=16, threads=1, amp="off", train_splits=splits)
    acc = _test_accuracy(tmp_path / "run")
    if learns_squares:
        assert acc >= 0.9
        assert math.isnan(summary["best_val_acc"]) and summary["best_epoch"] == 3  # no val: the last epoch
    else:
        assert acc <= 0.6  # never saw a square: says dark to everything
        assert summary["best_val_acc"] < 0.5


def test_the_test_split_never_trains(tmp_path):
    pack = _pack(tmp_path / "pack")
    with pytest.raises(ValueError, match="train_splits.*test split never trains"):
        workflow.train_packed(pack, tmp_path / "run", progress=False, epochs=1, train_splits=["train", "test"])


def test_the_cli_trains_on_train_and_val_and_says_which_epoch_it_kept(tmp_path):
    from conftest import run_cli

    pack = _pack(tmp_path / "pack")
    proc = run_cli("train", pack, "--out", tmp_path / "run", "--train-splits", "train,val", "--epochs", "2",
                   "--widths", "8,16,16", "--batch-size", "16", "--threads", "1", "--amp", "off", "--quiet")
    assert "train 192 / val 0 images" in proc.stdout
    assert "no val split: the last epoch (1) kept" in proc.stdout and "nan" not in proc.stdout
    epoch_rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert len(epoch_rows) == 2 and all(row[3:5] == ["-", "-"] for row in epoch_rows)  # val columns


def test_an_ensemble_trained_on_train_and_val_says_so_not_nan(tmp_path):
    from conftest import run_cli

    pack = _pack(tmp_path / "pack")
    proc = run_cli("train", pack, "--out", tmp_path / "run", "--train-splits", "train,val", "--epochs", "1",
                   "--ensemble", "2", "--widths", "8,16,16", "--batch-size", "16", "--threads", "1",
                   "--amp", "off", "--quiet")
    assert "member 1: no val split: the last epoch (0) kept" in proc.stdout
    assert "ensemble of 2: no val split;" in proc.stdout and "nan" not in proc.stdout
