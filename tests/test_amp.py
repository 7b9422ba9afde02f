"""Precision: what amp="auto" means (and how GEARSIGHT_AMP forces it), and that the bf16 path learns.

bf16 runs wherever torch runs: natively on AVX512-BF16/AMX CPUs and GPUs, emulated (slowly) elsewhere,
so the bf16 test below runs on every machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gearsight.config import TrainConfig
from gearsight.predict import Classifier
from gearsight.train import AMP_ENV, autocast_for, resolve_amp
from gearsight.workflow import train_arrays

CPU = torch.device("cpu")


def test_auto_follows_the_hardware_unless_the_environment_forces_it(monkeypatch):
    monkeypatch.delenv(AMP_ENV, raising=False)
    assert resolve_amp("auto", CPU) is False  # fp32 on every CPU, native bf16 or not (measured: train.py)
    assert resolve_amp("auto", torch.device("cuda")) is True
    monkeypatch.setenv(AMP_ENV, "off")
    assert resolve_amp("auto", CPU) is False and resolve_amp("auto", torch.device("cuda")) is False
    monkeypatch.setenv(AMP_ENV, "bf16")
    assert resolve_amp("auto", CPU) is True


def test_an_explicit_precision_beats_the_environment(monkeypatch):
    monkeypatch.setenv(AMP_ENV, "bf16")
    assert resolve_amp("off", CPU) is False
    monkeypatch.setenv(AMP_ENV, "off")
    assert resolve_amp("bf16", CPU) is True


def test_bad_precision_names_are_refused_with_the_name(monkeypatch):
    monkeypatch.setenv(AMP_ENV, "fp16")
    with pytest.raises(ValueError, match=r"\$GEARSIGHT_AMP='fp16'"):
        resolve_amp("auto", CPU)
    monkeypatch.delenv(AMP_ENV)
    with pytest.raises(ValueError, match="amp='half'"):
        resolve_amp("half", CPU)


def test_bf16_autocast_really_computes_in_bf16():
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast_for("bf16", CPU):
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
    with autocast_for("off", CPU):
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.float32


def _squares(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 80, (n, 32, 32, 3)).astype(np.uint8)
    images[labels == 1, 8:24, 8:24] += 150  # a bright square
    return images, labels


@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_training_learns_in_either_precision(tmp_path, amp):
    """The bf16 path (emulated where the CPU lacks it) and fp32 both learn an easy task, with margin:
    192 steps, far more than the ~20 this task needs in either precision."""
    cfg = TrainConfig().update(widths=[8, 16, 16], epochs=8, batch_size=16, threads=1, amp=amp)
    summary = train_arrays(_squares(384, 0), _squares(64, 1), ["dark", "square"], tmp_path / "run", cfg,
                           progress=False, resize="pad", fill=0)
    assert summary["best_val_acc"] >= 0.95
    clf = Classifier.load(tmp_path / "run" / "model.safetensors")
    test = _squares(128, 2)
    assert (clf.predict_packed(test[0]).argmax(1) == test[1]).mean() >= 0.95
    assert clf.spec.extra["config"]["amp"] == amp


def test_keep_last_saves_the_last_epoch_whatever_val_says(tmp_path):
    cfg = TrainConfig().update(widths=[8, 8, 8], epochs=3, batch_size=32, threads=1, amp="off", keep="last")
    summary = train_arrays(_squares(64, 0), _squares(32, 1), ["dark", "square"], tmp_path / "run", cfg,
                           progress=False, resize="pad", fill=0)
    assert summary["best_epoch"] == 2
    assert Classifier.load(tmp_path / "run" / "model.safetensors").spec.extra["best_epoch"] == 2
