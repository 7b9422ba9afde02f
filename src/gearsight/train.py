"""The fit loop: one-cycle SGD, label smoothing, batched uint8 augmentation, best-by-val saving.

Layout follows torchvision's reference scripts: ``train_one_epoch`` and ``evaluate`` are plain
functions, ``fit`` wires them with checkpointing, early stopping and logging.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from gearsight.checkpoint import ModelSpec, atomic_write, save_model
from gearsight.config import TrainConfig
from gearsight.data.loader import Batches
from gearsight.distributed import DistInfo, all_reduce_sum, init_from_env, shutdown
from gearsight.models import create_model
from gearsight.track import RunLogger


def cpu_has_fast_bf16() -> bool:
    """bf16 autocast only pays on CPUs with native bf16 dot products (AVX512-BF16 or AMX).

    Without them oneDNN emulates bf16 and is slower than fp32: measured here 58 GFLOP/s bf16 vs
    253 GFLOP/s fp32 (2048^2 matmul, 2 threads) on a Xeon without avx512_bf16.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_for(amp: str, device: torch.device):
    use_bf16 = amp == "bf16" or (amp == "auto" and (device.type == "cuda" or cpu_has_fast_bf16()))
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BN weights and biases: decaying them only fights the normalisation.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def make_ema(model: nn.Module, decay: float):
    """Weight EMA (torch.optim.swa_utils), buffers included so BN statistics follow; None if off."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(model, batches: Batches, optimizer, scheduler, epoch: int, cfg: TrainConfig,
                    device: torch.device, progress: bool = True, dist_info: DistInfo = DistInfo(),
                    ema=None) -> dict:
    model.train()
    loss_sum, correct, seen, data_time = 0.0, 0, 0, 0.0
    start = tick = time.perf_counter()
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch}", leave=False, disable=not progress)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        data_time += time.perf_counter() - tick
        with autocast_for(cfg.amp, device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], dist_info)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "img_per_s": seen / elapsed, "data_wait": data_time / elapsed, "epoch_time": elapsed}


@torch.no_grad()
def predict_logits(model, batches: Batches, device: torch.device, amp: str = "off", tta: bool = False) -> torch.Tensor:
    """Logits for every image of ``batches`` in order; with ``tta`` the mirror's logits are added."""
    model.eval()
    out = []
    with autocast_for(amp, device):
        for x, _ in batches.epoch(0):
            x = x.to(device)
            logits = model(x).float()
            if tta:
                logits = logits + model(x.flip(3)).float()
            out.append(logits.cpu())
    return torch.cat(out)


def evaluate(model, batches: Batches, device: torch.device, cfg: TrainConfig) -> dict:
    logits = predict_logits(model, batches, device, cfg.amp, cfg.tta)
    labels = batches.labels
    loss = F.cross_entropy(logits / (2 if cfg.tta else 1), labels).item()
    return {"val_loss": loss, "val_acc": (logits.argmax(1) == labels).float().mean().item()}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def build_model(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    model = create_model(cfg.arch, num_classes=num_classes, **arch_config(cfg))
    # channels_last: oneDNN's direct convs skip a layout reorder (measured ~1.3x on this CPU).
    return model.to(device=device, memory_format=torch.channels_last)


def arch_config(cfg: TrainConfig) -> dict:
    return {"widths": list(cfg.widths), "stem_kind": cfg.stem, "norm": cfg.norm}


def model_spec(cfg: TrainConfig, classes: list[str], size: int, resize: str, fill: int, extra: dict) -> ModelSpec:
    return ModelSpec(arch=cfg.arch, arch_config=arch_config(cfg), classes=list(classes),
                     input_size=size, resize=resize, pad_fill=fill, mean=list(cfg.mean), std=list(cfg.std),
                     extra=extra)


def save_resume_state(path: Path, model, optimizer, scheduler, epoch: int, best: dict, cfg: TrainConfig,
                      ema=None) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "best": best, "config": asdict(cfg)}
    if ema is not None:
        state["ema"] = ema.state_dict()
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_resume_state(path: Path, model, optimizer, scheduler, ema=None) -> tuple[int, dict]:
    # weights_only=True: tensors and plain containers only, no arbitrary unpickling.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    return state["epoch"], state["best"]


def fit(train: Batches, val: Batches, classes: list[str], run_dir: str | Path, cfg: TrainConfig, *,
        size: int, resize: str = "pad", fill: int = 255, resume: bool = False, progress: bool = True,
        data_info: dict | None = None) -> dict:
    """Train, keeping the best model by val accuracy in RUN/model.safetensors. Returns a summary.

    Under torchrun each process trains on its slice of every batch (see gearsight/distributed.py).
    """
    run_dir = Path(run_dir)
    info = init_from_env()
    train.rank, train.world_size = info.rank, info.world_size
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // info.world_size))
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg, len(classes), device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * len(train), pct_start=cfg.warmup,
        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0, cycle_momentum=False)
    ema = make_ema(model, cfg.ema)
    start_epoch, best = 0, {"val_acc": -1.0, "val_loss": math.inf, "epoch": -1}
    last_path = run_dir / "last.pt"
    if resume and last_path.is_file():
        start_epoch, best = load_resume_state(last_path, model, optimizer, scheduler, ema)
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
    for epoch in range(start_epoch, cfg.epochs):
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, train, optimizer, scheduler, epoch, cfg, device,
                                   progress and info.is_main, info, ema))
        best_net = ema.module if ema is not None else model  # the weights that get evaluated and saved
        row.update(evaluate(best_net, val, device, cfg))
        # Ties go to the later epoch: the val split is small (189 gear photos, 1 image = 0.5%), and
        # with a one-cycle schedule a later epoch has seen a lower learning rate.
        improved = row["val_acc"] >= best["val_acc"]
        if improved:
            best = {"val_acc": row["val_acc"], "val_loss": row["val_loss"], "epoch": epoch}
        if info.is_main:
            if improved:
                extra = {"best_epoch": epoch, "val_acc": row["val_acc"], "data": data_info or {},
                         "config": asdict(cfg), "world_size": info.world_size}
                save_model(run_dir / "model.safetensors", best_net, model_spec(cfg, classes, size, resize, fill, extra))
            save_resume_state(last_path, model, optimizer, scheduler, epoch, best, cfg, ema)
            logger.log_epoch(row, improved)
        if cfg.patience and epoch - best["epoch"] >= cfg.patience:
            if info.is_main:
                print(f"early stop: no better val accuracy for {cfg.patience} epochs")
            break
    summary = {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
               "train_seconds": time.perf_counter() - t0, "model": str(run_dir / "model.safetensors"),
               "world_size": info.world_size}
    if logger:
        logger.finish(summary, run_dir / "model.safetensors")
    shutdown(info)
    return summary
