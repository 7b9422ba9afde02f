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

    def describe(self, steps_per_epoch: int) -> str:
        epoch_s = self.step_s * steps_per_epoch + self.eval_s
        return (f"time budget {self.minutes:g} min: {self.epochs} epochs of {steps_per_epoch} steps "
                f"(measured {self.step_s * 1000:.0f} ms/step, {self.eval_s:.1f} s per evaluation: ~{epoch_s:.0f} s "
                f"an epoch, ~{self.epochs * epoch_s / 60:.1f} min in all; measuring took {self.probe_s:.1f} s)")


def measure_step_seconds(model: torch.nn.Module, train: Batches, cfg: TrainConfig, device: torch.device,
                         steps: int = 6, warmup: int = 2) -> float:
    """Median time of a training step on a copy of ``model`` (the real one is left untouched)."""
    from gearsight.train import autocast_for, make_optimizer

    probe = copy.deepcopy(model).train()
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
    from gearsight.train import autocast_for
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
    eval_s = measure_eval_seconds(model, val, cfg, device) if len(val.labels) else 0.0
    step_s, eval_s = (v / dist_info.world_size for v in all_reduce_sum([step_s, eval_s], dist_info))
    probe_s = time.perf_counter() - start
    epoch_s = step_s * len(train) + eval_s
    left = cfg.minutes * 60 * MARGIN - probe_s
    epochs = max(1, math.floor(left / epoch_s)) if epoch_s > 0 else 1
    return BudgetPlan(epochs=epochs, step_s=step_s, eval_s=eval_s, probe_s=probe_s, minutes=cfg.minutes)
