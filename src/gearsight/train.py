"""The fit loop: one-cycle SGD, label smoothing, batched uint8 augmentation, best-by-val saving.

Layout follows torchvision's reference scripts: ``train_one_epoch`` and ``evaluate`` are plain
functions, ``fit`` wires them with checkpointing, early stopping and logging.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from gearsight.budget import replan_points
from gearsight.checkpoint import improves, load_resume_state, save_resume_state  # noqa: F401  (re-exported)
from gearsight.config import TrainConfig
from gearsight.data.loader import Batches
from gearsight.data.transforms import to_model_input
from gearsight.distributed import DistInfo, all_reduce_sum, init_from_env, shutdown
from gearsight.mix import mix_batch, mixed_cross_entropy
from gearsight.modelfile import ModelSpec, save_model
from gearsight.models import TIMM_PREFIX, create_model
from gearsight.optim import (AMP_ENV, autocast_for, cpu_has_fast_bf16, make_optimizer,  # noqa: F401  (re-exported)
                             resolve_amp)
from gearsight.track import RunLogger
from gearsight.tta import tta_logits


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, steps_done: int = 0):
    """Linear one-cycle: lr_start -> peak at ``warmup`` of the run -> lr_end (fractions of the peak).

    ``steps_done``: rebuild the schedule for a new length in the middle of a run (the time budget's
    re-plan), at the step it has reached; the peaks are the ones the first schedule recorded."""
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g.get("max_lr", g["lr"]) for g in optimizer.param_groups], total_steps=total_steps,
        pct_start=cfg.warmup, anneal_strategy="linear", div_factor=1.0 / cfg.lr_start,
        final_div_factor=cfg.lr_start / cfg.lr_end, cycle_momentum=False)
    with warnings.catch_warnings():  # fast-forwarding is not the "step() before optimizer.step()" mistake
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for _ in range(steps_done):
            scheduler.step()
    return scheduler


class Lookahead:
    """airbench's lookahead: every 5 steps the weights and a slow copy meet at their weighted mean.

    The slow copy's weight grows as (progress)^3 up to 0.95^5, so early training runs free and the
    end of the run is averaged. ``finish`` leaves the model holding the slow weights (as airbench).
    Kept for the CIFAR recipe: airbench measured it worth ~0.1-0.2 points at ~10 epochs.
    """

    every = 5

    def __init__(self, model: nn.Module, total_steps: int):
        self.total_steps = max(total_steps, 1)
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        if step % self.every == 0:
            self._sync(model, 0.95 ** 5 * (step / self.total_steps) ** 3)

    @torch.no_grad()
    def finish(self, model: nn.Module) -> None:
        self._sync(model, 1.0)

    def _sync(self, model: nn.Module, decay: float) -> None:
        for name, value in model.state_dict().items():
            if name in self.slow:
                self.slow[name].lerp_(value, 1 - decay)
                value.copy_(self.slow[name])


def make_ema(model: nn.Module, decay: float):
    """Weight EMA (torch.optim.swa_utils), buffers included so BN statistics follow; None if off."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(model, batches: Batches, optimizer, scheduler, epoch: int, cfg: TrainConfig,
                    device: torch.device, progress: bool = True, dist_info: DistInfo = DistInfo(),
                    ema=None, lookahead: Lookahead | None = None) -> dict:
    model.train()
    bare = getattr(model, "module", model)  # under DDP, the model it wraps
    frozen = bare.frozen_parameters(epoch) if hasattr(bare, "frozen_parameters") else []
    if bare is model:
        # Outside DDP a frozen parameter leaves autograd altogether, which also skips the backward
        # pass below it (AirNet: the input gradient of the first block, ~4% of a step).
        for p in frozen:
            p.requires_grad_(False)
        frozen = []
    loss_sum, correct, seen, data_time = 0.0, 0, 0, 0.0
    start = tick = time.perf_counter()
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch}", leave=False, disable=not progress)
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        data_time += time.perf_counter() - tick
        if mixing:
            x, partner, lam = mix_batch(x, y, cfg.mixup, cfg.cutmix)
        with autocast_for(cfg.amp, device):
            logits = model(x)
            if mixing:
                loss = mixed_cross_entropy(logits.float(), y, partner, lam, cfg.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in frozen:  # a parameter without a gradient is skipped by SGD, momentum and decay included
            p.grad = None
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        if lookahead is not None:
            lookahead.step(bare, scheduler.last_epoch)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], dist_info)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "img_per_s": seen / elapsed, "data_wait": data_time / elapsed, "epoch_time": elapsed}


@torch.no_grad()
def predict_logits(model, batches: Batches, device: torch.device, amp: str = "off", tta: bool = False,
                   tta_translate: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every image ``batches`` yields, in order, test-time augmented as
    gearsight.tta says. The labels come with the images: a map file's unreadable image is dropped
    from its batch, so ``batches.labels`` (every entry) would no longer line up."""
    model.eval()
    out, labels = [], []
    with autocast_for(amp, device):
        for x, y in batches.epoch(0):
            out.append(tta_logits(model, x.to(device), tta, tta_translate).cpu())
            labels.append(y.cpu())
    return torch.cat(out), torch.cat(labels)


def evaluate(model, batches: Batches, device: torch.device, cfg: TrainConfig) -> dict:
    logits, labels = predict_logits(model, batches, device, cfg.amp, cfg.tta, cfg.tta_translate)
    loss = F.cross_entropy(logits, labels).item()
    return {"val_loss": loss, "val_acc": (logits.argmax(1) == labels).float().mean().item()}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def build_model(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    timm_arch = cfg.arch.startswith(TIMM_PREFIX)
    if not timm_arch and (cfg.pretrained or cfg.freeze_epochs or cfg.freeze_stages or cfg.bn_freeze != "off"):
        raise ValueError(f"pretrained, freeze_epochs, freeze_stages and bn_freeze need a timm architecture "
                         f"(--arch timm:<name>), not {cfg.arch!r}")
    # pretrained weights are a build-time argument only: the model file's arch_config leaves them out.
    build = {"pretrained": cfg.pretrained, "pretrained_strict": cfg.pretrained_strict} if timm_arch else {}
    model = create_model(cfg.arch, num_classes=num_classes, **arch_config(cfg), **build)
    if timm_arch:
        model.configure_finetuning(cfg.freeze_epochs, cfg.bn_freeze, cfg.freeze_stages)
        _warn_if_normalization_differs(cfg)
    # channels_last: oneDNN's direct convs skip a layout reorder (measured ~1.3x on this CPU).
    return model.to(device=device, memory_format=torch.channels_last)


def _warn_if_normalization_differs(cfg: TrainConfig) -> None:
    """Pretrained weights fed with TrainConfig's default mean/std: the caller skipped
    apply_pretrained_normalization (the batches are built by now, so only a warning is left)."""
    from gearsight.models.pretrained import DEFAULT_MEAN, DEFAULT_STD, weights_normalization

    found = weights_normalization(cfg.arch, cfg.pretrained)
    if found and [list(cfg.mean), list(cfg.std)] == [DEFAULT_MEAN, DEFAULT_STD] and found[:2] != (cfg.mean, cfg.std):
        print(f"warning: training {cfg.arch} with the default mean/std, but the pretrained weights expect mean "
              f"{found[0]} std {found[1]} ({found[2]}); call gearsight.models.pretrained."
              "apply_pretrained_normalization(cfg) before building the batches")


def fit_model_to_data(model: nn.Module, train: Batches, cfg: TrainConfig, device: torch.device) -> None:
    """Data-dependent init for models that have one (AirNet's whitening stem), on 5,000 train images.

    A seeded random 5,000, the same in every torchrun process: packs are often in class order (the
    CIFAR tar is), and the first 5,000 would all be airplanes.
    """
    if not hasattr(model, "fit_to_data"):
        return
    images = train.images  # once: for map-file input this property decodes through the pipeline
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
    model.fit_to_data(to_model_input(images[pick], cfg.mean, cfg.std).to(device))


def arch_config(cfg: TrainConfig) -> dict:
    if cfg.arch.startswith(TIMM_PREFIX):  # what rebuilds the timm network; nothing about pretrained weights
        return {k: v for k, v in (("drop_rate", cfg.drop_rate), ("drop_path_rate", cfg.drop_path_rate)) if v}
    return {"widths": list(cfg.widths), "stem_kind": cfg.stem, "norm": cfg.norm}


def model_spec(cfg: TrainConfig, classes: list[str], size: int, resize: str, fill: int, extra: dict) -> ModelSpec:
    return ModelSpec(arch=cfg.arch, arch_config=arch_config(cfg), classes=list(classes),
                     input_size=size, resize=resize, pad_fill=fill, mean=list(cfg.mean), std=list(cfg.std),
                     extra=extra)


def plan_time_budget(model, train: Batches, val: Batches, cfg: TrainConfig, device: torch.device, info: DistInfo,
                     resume_dir: Path | None = None) -> None:
    """``cfg.minutes``: set ``cfg.epochs`` to what fits the budget (gearsight.budget), and say so.

    A resumed run keeps the epochs it chose at its start (its schedule was built for them)."""
    saved = resume_dir / "config.yaml" if resume_dir else None
    if saved is not None and saved.is_file() and (resume_dir / "last.pt").is_file():
        cfg.epochs = TrainConfig.load(saved).epochs
        return
    from gearsight.budget import plan_epochs

    plan = plan_epochs(model, train, val, cfg, device, info)
    cfg.epochs = plan.epochs
    if info.is_main:
        print(plan.describe(len(train)), flush=True)


def replan_time_budget(cfg: TrainConfig, optimizer, lookahead: "Lookahead | None", steps_per_epoch: int,
                       budget_start: float, last_epoch_s: float, info: DistInfo, run_dir: Path, done: int = 1):
    """After ``done`` epochs: set ``cfg.epochs`` from the last one's real duration and rebuild the
    schedule for it (gearsight.budget.replan_epochs says why). Returns the scheduler to use from here on."""
    from gearsight.budget import replan_epochs

    planned = cfg.epochs
    cfg.epochs = replan_epochs(cfg, budget_start, last_epoch_s, info, done=done)
    if cfg.epochs != planned and info.is_main:
        print(f"time budget: epoch {done - 1} took {last_epoch_s:.0f} s; {cfg.epochs} epochs in all, not {planned}",
              flush=True)
        cfg.dump(run_dir / "config.yaml")  # what a resumed run keeps
    if lookahead is not None:
        lookahead.total_steps = cfg.epochs * steps_per_epoch
    return make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch, steps_done=done * steps_per_epoch)


def fit(train: Batches, val: Batches, classes: list[str], run_dir: str | Path, cfg: TrainConfig, *,
        size: int, resize: str = "pad", fill: int = 255, resume: bool = False, progress: bool = True,
        data_info: dict | None = None) -> dict:
    """Train, keeping the best model by val accuracy in RUN/model.safetensors. Returns a summary.

    Under torchrun each process trains on its slice of every batch (see gearsight/distributed.py).
    """
    run_dir = Path(run_dir)
    info = init_from_env(cfg.device)  # the device: gearsight.devices; under torchrun cuda:LOCAL_RANK
    train.rank, train.world_size = info.rank, info.world_size
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // info.world_size))
    device = info.device
    model = build_model(cfg, len(classes), device)
    fit_model_to_data(model, train, cfg, device)
    budget_start = time.perf_counter()
    if cfg.minutes:
        plan_time_budget(model, train, val, cfg, device, info, run_dir if resume else None)
    optimizer = make_optimizer(model, cfg)
    total_steps = cfg.epochs * len(train)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    ema = make_ema(model, cfg.ema)
    lookahead = Lookahead(model, total_steps) if cfg.lookahead else None
    has_val = len(val.labels) > 0  # without a val split the last epoch's model is kept
    start_epoch, best = 0, {"val_acc": -1.0, "val_loss": math.inf, "epoch": -1}
    last_path = run_dir / "last.pt"
    if resume and last_path.is_file():
        start_epoch, best = load_resume_state(last_path, model, optimizer, scheduler, ema, lookahead)
        start_epoch += 1
        if info.is_main:
            print(f"resumed from {last_path} at epoch {start_epoch}")
    net = model if info.world_size == 1 else torch.nn.parallel.DistributedDataParallel(model)
    logger = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(run_dir / "config.yaml")
        logger = RunLogger(run_dir, cfg, start_epoch)

    t0 = time.perf_counter()
    epoch, last_epoch_s = start_epoch, 0.0
    replan_after = replan_points(model) if cfg.minutes and start_epoch == 0 else set()
    while epoch < cfg.epochs:  # not range(): a time budget may re-plan the epoch count after epoch 0
        if epoch in replan_after:
            scheduler = replan_time_budget(cfg, optimizer, lookahead, len(train), budget_start, last_epoch_s,
                                           info, run_dir, done=epoch)
        epoch_start = time.perf_counter()
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, train, optimizer, scheduler, epoch, cfg, device,
                                   progress and info.is_main, info, ema, lookahead))
        if lookahead is not None and epoch == cfg.epochs - 1:
            lookahead.finish(model)
        best_net = ema.module if ema is not None else model  # the weights that get evaluated and saved
        row.update(evaluate(best_net, val, device, cfg) if has_val else {"val_loss": math.nan, "val_acc": math.nan})
        improved = improves(row["val_acc"], best["val_acc"]) if has_val and cfg.keep == "best" else True  # ties: later
        if improved:
            best = {"val_acc": row["val_acc"], "val_loss": row["val_loss"], "epoch": epoch}
        if info.is_main:
            if improved:
                extra = {"best_epoch": epoch, "val_acc": row["val_acc"], "data": data_info or {},
                         "config": asdict(cfg), "world_size": info.world_size}
                save_model(run_dir / "model.safetensors", best_net, model_spec(cfg, classes, size, resize, fill, extra))
            save_resume_state(last_path, model, optimizer, scheduler, epoch, best, cfg, ema, lookahead)
            logger.log_epoch(row, improved)
        if cfg.patience and epoch - best["epoch"] >= cfg.patience:
            if info.is_main:
                print(f"early stop: no better val accuracy for {cfg.patience} epochs")
            break
        last_epoch_s = time.perf_counter() - epoch_start  # what the time budget's re-plan measures
        epoch += 1
    summary = {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
               "train_seconds": time.perf_counter() - t0, "model": str(run_dir / "model.safetensors"),
               "world_size": info.world_size}
    if logger:
        logger.finish(summary, run_dir / "model.safetensors")
    shutdown(info)
    return summary
