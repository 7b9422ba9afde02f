"""--minutes: the epoch count is measured on this machine to fit a wall-clock budget (gearsight/budget.py)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from gearsight.budget import MARGIN, plan_epochs
from gearsight.config import TrainConfig
from gearsight.data.loader import Batches
from gearsight.train import build_model, fit, make_optimizer, make_scheduler


def _data(n: int, seed: int) -> Batches:
    """Two classes a small net can tell apart: bright vs dark squares, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 120, (n, 32, 32, 3), dtype=np.uint8) + (labels * 120).astype(np.uint8)[:, None, None, None]
    return images, labels


def _batches(images, labels, cfg: TrainConfig, shuffle: bool) -> Batches:
    return Batches.from_arrays(images, labels, batch_size=cfg.batch_size, shuffle=shuffle, mean=cfg.mean,
                               std=cfg.std, seed=cfg.seed, augment=shuffle, translate=cfg.translate)


def test_the_plan_is_its_own_arithmetic_and_grows_with_the_budget():
    cfg = TrainConfig(widths=[8, 16, 16], batch_size=16, amp="off", threads=1)
    train, val = _batches(*_data(64, 0), cfg, True), _batches(*_data(32, 1), cfg, False)
    torch.manual_seed(0)
    model = build_model(cfg, 2, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plans = {}
    for minutes in (0.05, 2.0):
        cfg.minutes = minutes
        plans[minutes] = plan = plan_epochs(model, train, val, cfg, torch.device("cpu"))
        epoch_s = plan.step_s * len(train) + plan.eval_s
        assert plan.step_s > 0 and plan.eval_s > 0
        assert plan.epochs == max(1, math.floor((minutes * 60 * MARGIN - plan.probe_s) / epoch_s))
        assert f"{plan.epochs} epochs of {len(train)} steps" in plan.describe(len(train))
    assert plans[2.0].epochs > 5 * plans[0.05].epochs  # 40x the budget; steps measured separately
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # measured on a copy


def test_fit_with_minutes_ends_inside_the_budget_and_resume_keeps_its_epochs(tmp_path, capsys):
    cfg = TrainConfig(widths=[8, 16, 16], batch_size=16, amp="off", threads=1, minutes=0.25, epochs=1)
    train, val = _batches(*_data(128, 0), cfg, True), _batches(*_data(32, 1), cfg, False)
    start_cfg = TrainConfig(**{**cfg.__dict__})
    summary = fit(train, val, ["dark", "bright"], tmp_path, cfg, size=32, progress=False)
    said = capsys.readouterr().out
    chosen = TrainConfig.load(tmp_path / "config.yaml").epochs
    planned = int(re.search(r"time budget 0.25 min: (\d+) epochs", said).group(1))
    replan = re.search(r"time budget: epoch 0 took \d+ s; (\d+) epochs in all, not (\d+)", said)
    assert chosen == (int(replan.group(1)) if replan else planned)
    assert not replan or int(replan.group(2)) == planned
    assert chosen > 1  # the budget, not epochs=1, decided
    # The schedule ran to its end for the epochs chosen, whether or not it was re-planned.
    sched = torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]
    assert sched["total_steps"] == sched["last_epoch"] == chosen * len(train)
    assert summary["train_seconds"] <= 0.25 * 60 * 1.5  # 15 s budget; generous for a shared machine
    assert summary["best_val_acc"] > 0.9
    # Resuming a finished run re-plans nothing: same epochs, no new measurement, nothing left to train.
    again = fit(train, val, ["dark", "bright"], tmp_path, start_cfg, size=32, progress=False, resume=True)
    assert "time budget" not in capsys.readouterr().out
    assert start_cfg.epochs == chosen and again["train_seconds"] < 1.0


def test_a_model_that_freezes_parameters_later_is_timed_in_both_regimes():
    """AirNet's whitening bias stops training after whiten_bias_epochs: the later steps skip the
    first conv's backward pass, and the plan counts them at their own measured speed."""
    cfg = TrainConfig(arch="airnet", widths=[8, 16, 16], batch_size=16, amp="off", threads=1, minutes=0.5)
    train, val = _batches(*_data(64, 0), cfg, True), _batches(*_data(32, 1), cfg, False)
    torch.manual_seed(0)
    model = build_model(cfg, 2, torch.device("cpu"))
    trains = [p.requires_grad for p in model.parameters()]
    plan = plan_epochs(model, train, val, cfg, torch.device("cpu"))
    assert plan.late_from == model.whiten_bias_epochs and plan.late_step_s > 0
    assert [p.requires_grad for p in model.parameters()] == trains  # frozen on the probe copy only
    spent, epochs = 0.0, 0
    while spent + plan.epoch_seconds(epochs, len(train)) <= cfg.minutes * 60 * MARGIN - plan.probe_s:
        spent += plan.epoch_seconds(epochs, len(train))
        epochs += 1
    assert plan.epochs == max(epochs, 1)
    assert plan.epoch_seconds(0, len(train)) == plan.step_s * len(train) + plan.eval_s
    assert plan.epoch_seconds(plan.late_from, len(train)) == plan.late_step_s * len(train) + plan.eval_s


def test_a_rebuilt_schedule_continues_at_the_step_reached_with_the_original_peaks():
    cfg = TrainConfig(lr=0.4, widths=[8, 16, 16])
    model = build_model(cfg, 2, torch.device("cpu"))

    def lrs_after(total: int, done: int, rebuild_from: int | None = None) -> list[float]:
        optimizer = make_optimizer(model, cfg)
        scheduler = make_scheduler(optimizer, cfg, 100)
        for _ in range(rebuild_from or 0):
            optimizer.step()
            scheduler.step()
        if rebuild_from is not None:
            scheduler = make_scheduler(optimizer, cfg, total, steps_done=rebuild_from)
        else:
            scheduler = make_scheduler(optimizer, cfg, total, steps_done=done)
        return [g["lr"] for g in optimizer.param_groups], scheduler

    fresh, _ = lrs_after(150, 30)
    rebuilt, scheduler = lrs_after(150, 30, rebuild_from=30)
    assert rebuilt == pytest.approx(fresh)
    for _ in range(119):  # to step 149, the last one of 150 (training's last update uses its lr)
        scheduler.step()
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * cfg.lr_end)  # peak kept, end reached


def test_fit_replans_after_epoch_0_and_after_the_first_frozen_epoch(tmp_path, monkeypatch):
    """AirNet's epochs get faster once its whitening bias freezes: the budget is re-planned from the
    measured durations of epoch 0 and of the first frozen epoch, and the schedule still runs to its
    end for the epochs finally chosen (a 28-minute CIFAR run planned on epoch 0 alone ended 6 early)."""
    import gearsight.budget as budget

    calls: list[int] = []
    real = budget.replan_epochs

    def recorded(*args, done: int = 1, **kwargs):
        calls.append(done)
        return real(*args, done=done, **kwargs)

    monkeypatch.setattr(budget, "replan_epochs", recorded)
    cfg = TrainConfig(arch="airnet", widths=[8, 16, 16], batch_size=16, amp="off", threads=1, minutes=0.25,
                      epochs=1)
    train, val = _batches(*_data(64, 0), cfg, True), _batches(*_data(16, 1), cfg, False)
    fit(train, val, ["dark", "bright"], tmp_path, cfg, size=32, progress=False)
    chosen = TrainConfig.load(tmp_path / "config.yaml").epochs
    late = build_model(cfg, 2, torch.device("cpu")).whiten_bias_epochs
    assert chosen > late + 1, "the budget should hold more epochs than the freeze point here"
    assert calls == [1, late + 1]
    sched = torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]
    assert sched["total_steps"] == sched["last_epoch"] == chosen * len(train)
