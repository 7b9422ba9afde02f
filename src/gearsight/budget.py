"""A wall-clock budget for classifier training (``TrainConfig.minutes``, ``gearsight train --minutes``).

The epoch count that fits M minutes is measured, not guessed: the same recipe runs 3x faster on a
CPU with native bf16 than on one without, and 20x faster again on a GPU, so a fixed epoch count
tuned on one machine under- or over-shoots on the next. Before training, a throwaway copy of the
model takes a few real steps on real batches (data pipeline included) and evaluates a few val
batches (TTA included); the epochs that fit what is left of the budget follow, and the one-cycle
schedule is built for them. Epochs stay whole: the schedule's end (lr decayed, lookahead merged) is
what makes the last model good, and a run cut mid-epoch would miss it.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gearsight.config import TrainConfig
from gearsight.data.loader import Batches
from gearsight.distributed import DistInfo, all_reduce_sum
from gearsight.optim import autocast_for, make_optimizer

# Safety margin: step times drift (other jobs, thermal limits, AirNet's whitening bias freezing makes
# later epochs faster, never slower), and overshooting a budget is worse than ending a little early.
MARGIN = 0.95


@dataclass
class BudgetPlan:
    epochs: int
    step_s: float  # median seconds per training step (this process's slice of a batch)
    eval_s: float  # seconds for one evaluation of the val split (0 without one)
    probe_s: float  # what the measurement itself cost
    minutes: float
    late_step_s: float = 0.0  # the step once the model freezes parameters (AirNet's whitening bias)...
    late_from: int = -1  # ...from this epoch on; -1: the model freezes nothing, every step is step_s

    def epoch_seconds(self, epoch: int, steps_per_epoch: int) -> float:
        late = 0 <= self.late_from <= epoch
        return (self.late_step_s if late else self.step_s) * steps_per_epoch + self.eval_s

    def describe(self, steps_per_epoch: int) -> str:
        total = sum(self.epoch_seconds(e, steps_per_epoch) for e in range(self.epochs))
        steps = f"{self.step_s * 1000:.0f} ms/step"
        if self.late_from >= 0:
            steps += f", {self.late_step_s * 1000:.0f} from epoch {self.late_from}"
        return (f"time budget {self.minutes:g} min: {self.epochs} epochs of {steps_per_epoch} steps "
                f"(measured {steps}, {self.eval_s:.1f} s per evaluation: ~{total / max(self.epochs, 1):.0f} s "
                f"an epoch, ~{total / 60:.1f} min in all; measuring took {self.probe_s:.1f} s)")


def measure_step_seconds(model: torch.nn.Module, train: Batches, cfg: TrainConfig, device: torch.device,
                         steps: int = 6, warmup: int = 2, epoch: int = 0) -> float:
    """Median time of a training step in ``epoch`` on a copy of ``model`` (the real one is left
    untouched); parameters the model freezes in that epoch leave autograd, as in training."""
    probe = copy.deepcopy(model).train()
    for p in probe.frozen_parameters(epoch) if hasattr(probe, "frozen_parameters") else []:
        p.requires_grad_(False)
    optimizer = make_optimizer(probe, cfg)
    times = []
    tick = time.perf_counter()
    for i, (x, y) in enumerate(train.epoch(0)):
        x, y = x.to(device), y.to(device)
        with autocast_for(cfg.amp, device):
            loss = F.cross_entropy(probe(x).float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # wait for the device (CUDA runs asynchronously)
        now = time.perf_counter()
        if i >= warmup:  # the first steps pay one-off costs (oneDNN primitive creation, CUDA kernels)
            times.append(now - tick)
        tick = now
        if len(times) == steps:
            break
    return statistics.median(times) if times else (time.perf_counter() - tick)


def measure_eval_seconds(model: torch.nn.Module, val: Batches, cfg: TrainConfig, device: torch.device,
                         batches: int = 2) -> float:
    """Seconds for one evaluation of ``val`` (with TTA), extrapolated from its first batches."""
    from gearsight.tta import tta_logits

    n = len(val)
    if n == 0:
        return 0.0
    model.eval()
    seen, start = 0, time.perf_counter()
    with torch.no_grad(), autocast_for(cfg.amp, device):
        for i, (x, _) in enumerate(val.epoch(0)):
            tta_logits(model, x.to(device), cfg.tta, cfg.tta_translate).float().sum().item()
            seen += 1
            if seen == batches:
                break
    return (time.perf_counter() - start) / max(seen, 1) * n


def plan_epochs(model: torch.nn.Module, train: Batches, val: Batches, cfg: TrainConfig, device: torch.device,
                dist_info: DistInfo = DistInfo()) -> BudgetPlan:
    """How many whole epochs (at least 1) fit ``cfg.minutes``, measured on this machine.

    Under torchrun every process measures its own slice and they agree on the mean, so all
    processes build the same schedule.
    """
    start = time.perf_counter()
    step_s = measure_step_seconds(model, train, cfg, device)
    # AirNet's steps get faster once its whitening bias freezes (no backward pass through the first
    # conv): measured 913 -> 1,000-1,180 img/s, and planning with the first epoch's step alone left
    # 2.3 of 10 minutes unused (docs/BENCHMARKS.md, "Training to a time budget"). So time both.
    late_from = first_freezing_epoch(model)
    late_s = measure_step_seconds(model, train, cfg, device, epoch=late_from) if late_from >= 0 else step_s
    eval_s = measure_eval_seconds(model, val, cfg, device) if len(val.labels) else 0.0
    step_s, late_s, eval_s = (v / dist_info.world_size
                              for v in all_reduce_sum([step_s, late_s, eval_s], dist_info))
    plan = BudgetPlan(epochs=0, step_s=step_s, eval_s=eval_s, probe_s=time.perf_counter() - start,
                      minutes=cfg.minutes, late_step_s=late_s, late_from=late_from)
    left = cfg.minutes * 60 * MARGIN - plan.probe_s
    while plan.epochs < 100_000 and (spent := plan.epoch_seconds(plan.epochs, len(train))) <= left:
        left -= spent
        plan.epochs += 1
    plan.epochs = max(plan.epochs, 1)
    return plan


def first_freezing_epoch(model: torch.nn.Module, horizon: int = 1000) -> int:
    """The first epoch in which the model freezes a parameter (``frozen_parameters``), or -1."""
    frozen = getattr(model, "frozen_parameters", None)
    if frozen is None or not frozen(horizon):
        return -1
    return next(e for e in range(horizon + 1) if frozen(e))


def replan_points(model: torch.nn.Module) -> set[int]:
    """The epochs before which fit re-plans (``replan_epochs``): after epoch 0, and after the first
    epoch in which the model freezes parameters (its steps get faster from there)."""
    late = first_freezing_epoch(model)
    return {1} | ({late + 1} if late >= 1 else set())


def replan_epochs(cfg: TrainConfig, budget_start: float, last_epoch_s: float,
                  dist_info: DistInfo = DistInfo(), done: int = 1) -> int:
    """Epochs in all, once ``done`` epochs have run: what is left of the budget over the last epoch's
    real time.

    The few steps timed before training run slower than the steady state (oneDNN's first passes,
    allocator warm-up, a busy machine), which left 2.3 of 10 and 6.5 of 30 minutes unused on
    CIFAR-10 (docs/BENCHMARKS.md, "Training to a time budget"); a whole epoch, evaluation and
    checkpoint included, is the better measure. fit re-plans after epoch 0 and again after the first
    epoch in which the model freezes parameters: AirNet's epochs 3+ ran at 50-54 s against epoch
    0's 63 s, and planning with epoch 0 alone ended a 28-minute budget 6 minutes early. At least
    ``done + 1``: one more epoch finishes the schedule."""
    left = cfg.minutes * 60 * MARGIN - (time.perf_counter() - budget_start)
    left, last_epoch_s = (v / dist_info.world_size for v in all_reduce_sum([left, last_epoch_s], dist_info))
    return done + max(1, math.floor(left / max(last_epoch_s, 1e-9)))
