"""Detector training: the fit loop, LR schedule, per-epoch log, best model by validation mAP, resume.

Follows torchvision's detection reference (SGD + momentum, linear warmup, train_one_epoch /
evaluate split, a checkpoint holding model, optimizer, epoch and args) with two CPU-minded twists:
- ``time_budget_min``: the cosine schedule runs over wall-clock time instead of epochs, so a run
  finishes annealed inside its budget whatever the machine's load (epochs then only cap it);
- ``threads`` defaults to 1: on this shared 2-core box, 2 intra-op threads made a training step
  8x *slower* whenever another process was busy (OpenMP threads wait for each other); the data
  loader worker uses the other core.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gearsight._moved import names as moved_names
from gearsight.checkpoint import improves, load_detector_state, save_detector_state
from gearsight.detect.evaluate import evaluate_outputs, format_metrics
from gearsight.detect.model import DEFAULT_ARCH, DetectorConfig, create_detector, load_torchvision_weights
from gearsight.detect.predict import detector_spec, run_model, save_detector
from gearsight.detect.records import DetectionData
from gearsight.detect.transforms import DetectionDataset, collate, train_transforms
from gearsight.devices import model_device, resolve_device
from gearsight.files import atomic_write

LOSSES = ["loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"]
COLUMNS = ["epoch", "step", "loss", *LOSSES, "lr", "img_per_s", "elapsed_min", "val_AP", "val_AP50", "val_AP75"]


# The resume checkpoint moved to gearsight.checkpoint; the old names warn for one release.
__getattr__ = moved_names(__name__, {"save_state": "gearsight.checkpoint.save_detector_state",
                                     "load_state": "gearsight.checkpoint.load_detector_state"})


@dataclass
class DetectTrainConfig:
    arch: str = DEFAULT_ARCH
    model: DetectorConfig = field(default_factory=DetectorConfig)
    epochs: int = 30  # upper bound when time_budget_min is set
    time_budget_min: float | None = None  # wall-clock minutes for the whole fit, evaluations included
    batch_size: int = 4
    lr: float = 0.02  # SGD, for batch_size images
    momentum: float = 0.9
    weight_decay: float = 1e-4  # not applied to norm weights and biases
    warmup_steps: int = 200
    clip_grad: float = 10.0  # max gradient norm: from-scratch detectors spike early on
    crop: int | None = None  # training crop side; None = model.min_size
    scale_range: tuple[float, float] = (0.75, 1.33)
    vflip: bool = False
    photometric: bool = True
    eval_every: int = 1  # epochs between validation runs (the last epoch is always evaluated)
    eval_from: float = 0.0  # fraction of the schedule before the first validation run
    select: str = "AP"  # validation metric that picks the best model: AP (COCO mAP) or AP50
    threads: int = 1
    workers: int = 1
    cache: bool = True  # keep decoded training images in memory (the worker's)
    seed: int = 0
    weights: str | None = None  # local torchvision checkpoint to start from
    device: str = "auto"  # where training runs: auto, cpu, cuda, cuda:N (gearsight/devices.py)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class Schedule:
    """Linear warmup then cosine to zero, over steps or over wall-clock time."""

    def __init__(self, cfg: DetectTrainConfig, steps_per_epoch: int):
        self.cfg = cfg
        self.total_steps = max(1, cfg.epochs * steps_per_epoch)

    def progress(self, step: int, elapsed_s: float) -> float:
        if self.cfg.time_budget_min:
            return elapsed_s / (60 * self.cfg.time_budget_min)
        return step / self.total_steps

    def lr(self, step: int, elapsed_s: float) -> float:
        warm = min(1.0, (step + 1) / max(1, self.cfg.warmup_steps))
        p = min(1.0, self.progress(step, elapsed_s))
        return self.cfg.lr * (0.001 + 0.999 * warm) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model, cfg: DetectTrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


class RunLog:
    """RUN/metrics.csv (one row per epoch) and the matching console line."""

    def __init__(self, run_dir: Path, resume: bool):
        self.path = run_dir / "metrics.csv"
        if not (resume and self.path.is_file()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)
        print(f"{'epoch':>5} {'loss':>7} {'cls':>6} {'box':>6} {'obj':>6} {'rpn':>6} {'lr':>7} {'img/s':>6} "
              f"{'min':>6} {'valAP':>6} {'AP50':>6}", flush=True)

    def write(self, row: dict[str, Any], improved: bool) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(["" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float)
                                    else row[c] for c in COLUMNS])
        val = (f"{row['val_AP']:6.3f} {row['val_AP50']:6.3f}" if row.get("val_AP") is not None else f"{'-':>6} {'-':>6}")
        print(f"{row['epoch']:5d} {row['loss']:7.4f} {row['loss_classifier']:6.3f} {row['loss_box_reg']:6.3f} "
              f"{row['loss_objectness']:6.3f} {row['loss_rpn_box_reg']:6.3f} {row['lr']:7.4f} {row['img_per_s']:6.2f} "
              f"{row['elapsed_min']:6.1f} {val}{'  *' if improved else ''}", flush=True)


def _progress_bar(loader, epoch: int):
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None, unit="batch")  # off when not a TTY


def train_one_epoch(model, loader, optimizer, schedule: Schedule, state: dict, cfg: DetectTrainConfig,
                    start: float) -> dict[str, float]:
    model.train()
    device = model_device(model)
    sums = dict.fromkeys(["loss", *LOSSES], 0.0)
    seen, t0 = 0, time.perf_counter()
    bar = _progress_bar(loader, state["epoch"])
    for images, targets in bar:
        elapsed = state["elapsed"] + time.perf_counter() - start
        if schedule.progress(state["step"], elapsed) >= 1.0:
            break  # time budget spent: stop mid-epoch, the schedule has annealed
        lr = schedule.lr(state["step"], elapsed)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in targets]
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {state['step']}: lower --lr or raise --warmup")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        state["step"] += 1
        seen += len(images)
        sums["loss"] += loss.item() * len(images)
        for k in LOSSES:
            sums[k] += losses[k].item() * len(images)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")
    took = time.perf_counter() - t0
    row = {k: v / max(1, seen) for k, v in sums.items()}
    return {**row, "lr": optimizer.param_groups[0]["lr"], "img_per_s": seen / max(took, 1e-9), "images": seen}


def validate(model, data: DetectionData) -> dict[str, Any]:
    outputs = run_model(model, [r.image for r in data.records])
    return evaluate_outputs(data, outputs)


def build_model(cfg: DetectTrainConfig, num_classes: int):
    model = create_detector(cfg.arch, num_classes, cfg.model)
    if cfg.weights:
        loaded, skipped = load_torchvision_weights(model, cfg.weights)
        print(f"weights: {loaded} tensors from {cfg.weights}; {len(skipped)} left at random init "
              f"(e.g. {', '.join(skipped[:3]) or 'none'})", flush=True)
    return model


def _should_validate(cfg: DetectTrainConfig, epoch: int, progress: float, last: bool) -> bool:
    return last or (progress >= cfg.eval_from and epoch % cfg.eval_every == 0)


def fit(train: DetectionData, val: DetectionData | None, run_dir: str | Path, cfg: DetectTrainConfig, *,
        resume: bool = False) -> dict[str, Any]:
    """Train, write RUN/{model.safetensors (best), last.pt, metrics.csv, config.json}; return a summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    atomic_write(run_dir / "config.json", lambda tmp: Path(tmp).write_text(cfg.to_json()))
    model = build_model(cfg, len(train.classes)).to(resolve_device(cfg.device))
    optimizer = make_optimizer(model, cfg)
    dataset = DetectionDataset(train.records, train_transforms(
        cfg.model.min_size, cfg.model.max_size, cfg.crop or cfg.model.min_size, scale_range=cfg.scale_range,
        vflip=cfg.vflip, photometric=cfg.photometric), cache=cfg.cache)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) > cfg.batch_size,
        num_workers=cfg.workers, collate_fn=collate, persistent_workers=cfg.workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed))
    schedule = Schedule(cfg, len(loader))
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": None, "best_epoch": None}
    last_path, model_path = run_dir / "last.pt", run_dir / "model.safetensors"
    if resume and last_path.is_file():
        state = load_detector_state(last_path, model, optimizer)
        print(f"resumed from {last_path}: epoch {state['epoch']}, step {state['step']}", flush=True)
    log = RunLog(run_dir, resume and last_path.is_file())
    start = time.perf_counter()

    def elapsed() -> float:
        return state["elapsed"] + time.perf_counter() - start

    while state["epoch"] < cfg.epochs and schedule.progress(state["step"], elapsed()) < 1.0:
        state["epoch"] += 1
        row = train_one_epoch(model, loader, optimizer, schedule, state, cfg, start)
        progress = schedule.progress(state["step"], elapsed())
        last = state["epoch"] >= cfg.epochs or progress >= 1.0
        metrics = validate(model, val) if val is not None and _should_validate(cfg, state["epoch"], progress, last) else None
        improved = _update_best(metrics, state, cfg, model, model_path, train, val)
        row.update(epoch=state["epoch"], step=state["step"], elapsed_min=elapsed() / 60)
        if metrics:
            row.update(val_AP=metrics["AP"], val_AP50=metrics["AP50"], val_AP75=metrics["AP75"])
        log.write(row, improved)
        # Saved after the epoch's bookkeeping, so a resumed run never repeats or skips an epoch.
        save_detector_state(last_path, model, optimizer, {**state, "elapsed": elapsed()}, cfg)
    if val is None:  # nothing to select on: the final weights are the model
        _save(model, model_path, cfg, train, {"epoch": state["epoch"]})
    summary = {"epochs": state["epoch"], "steps": state["step"], "minutes": elapsed() / 60,
               f"best_val_{cfg.select}": state["best"], "best_epoch": state["best_epoch"], "model": str(model_path)}
    print(json.dumps(summary), flush=True)
    return summary


def _save(model, path: Path, cfg: DetectTrainConfig, train: DetectionData, extra: dict) -> None:
    spec = detector_spec(cfg.arch, cfg.model, train.classes, train.category_ids, extra)
    save_detector(path, model, spec)


def _update_best(metrics, state: dict, cfg: DetectTrainConfig, model, path: Path, train: DetectionData,
                 val: DetectionData | None) -> bool:
    if not metrics or not improves(metrics[cfg.select], state["best"]):  # ties go to the later epoch
        return False
    state["best"], state["best_epoch"] = metrics[cfg.select], state["epoch"]
    _save(model, path, cfg, train, {"epoch": state["epoch"], "val_metrics": {
        k: metrics[k] for k in ("AP", "AP50", "AP75")}, "val_per_class": metrics["per_class"]})
    print(format_metrics(metrics, per_class=len(train.classes) <= 10), flush=True)
    return True
