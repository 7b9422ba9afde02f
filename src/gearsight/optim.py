"""One training step's optimizer and precision: ``make_optimizer`` (the recipe's SGD parameter
groups) and ``resolve_amp`` / ``autocast_for`` (bf16 or fp32, and why).

Shared by the fit loop (train.py) and the time budget's step measurement (budget.py), which
therefore import this module and not each other. train.py re-exports every name.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.nn as nn

from gearsight.config import TrainConfig


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


AMP_ENV = "GEARSIGHT_AMP"  # forces what amp="auto" means: "off" or "bf16" (the tests honour it too)


def resolve_amp(amp: str, device: torch.device) -> bool:
    """True when training should run under bf16 autocast.

    ``auto`` is bf16 on GPUs and fp32 on every CPU, native bf16 or not. Measured on the gear recipe
    (bench/bench_amp.py, docs/BENCHMARKS.md "bf16 vs fp32"): bf16 autocast evaluates the same
    weights identically (0-1 of 443 test predictions flip; every layer's output within bf16's
    rounding, 0.2-0.6%), but *training* in it is noisier: over 3 seeds the median test accuracy fell
    0.2 points and one seed collapsed to 94.6% (fp32: never under 97.7%). The gear recipe trains in
    ~2 minutes either way, so the CPU default buys reproducibility, not speed: the same figure on
    AVX512-BF16/AMX CPUs and on CPUs without. ``bf16`` asks for it anyway (emulated and slow where
    the CPU lacks it). ``$GEARSIGHT_AMP`` overrides what auto means, so one test suite runs both
    ways on any machine; an explicit "off" or "bf16" in the config always wins.
    """
    if amp == "auto" and os.environ.get(AMP_ENV):
        amp = os.environ[AMP_ENV]
        if amp not in ("off", "bf16"):
            raise ValueError(f"${AMP_ENV}={amp!r}: expected 'off' or 'bf16'")
    if amp not in ("auto", "off", "bf16"):
        raise ValueError(f"amp={amp!r}: expected 'auto', 'off' or 'bf16'")
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast_for(amp: str, device: torch.device):
    if not resolve_amp(amp, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Nesterov SGD in two groups: weights (decayed) and 1-d parameters (biases, norm scales).

    Gear recipe (bias_lr_scale 1): no decay on 1-d parameters, decaying them only fights the
    normalisation. airbench recipe (bias_lr_scale 64): normalization-layer biases learn 64x faster
    and get the decay divided by the same factor, so they shrink as much per step as the weights;
    other biases (AirNet's whitening bias) train like weights, as in airbench.
    Frozen parameters (requires_grad False, e.g. AirNet's whitening filters) are left out.
    Fine-tuning (head_lr_scale != 1): each group splits into backbone and classifier head, the head's
    lr multiplied by head_lr_scale (the model's ``head_parameters()``, else its ``head`` module).
    """
    scale = cfg.bias_lr_scale
    if scale == 1.0:
        special = {id(p) for p in model.parameters() if p.ndim <= 1}
        special_decay = 0.0
    else:
        norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
        special = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()}
        special_decay = cfg.weight_decay / scale
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in special], "weight_decay": cfg.weight_decay, "lr": cfg.lr},
              {"params": [p for p in trainable if id(p) in special], "weight_decay": special_decay, "lr": cfg.lr * scale}]
    if cfg.head_lr_scale != 1.0:
        head = {id(p) for p in _head_parameters(model)}
        groups = [{**g, "params": [p for p in g["params"] if (id(p) in head) == in_head],
                   "lr": g["lr"] * (cfg.head_lr_scale if in_head else 1.0)} for in_head in (False, True) for g in groups]
        groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def _head_parameters(model: nn.Module) -> list[nn.Parameter]:
    if hasattr(model, "head_parameters"):
        return list(model.head_parameters())
    if isinstance(getattr(model, "head", None), nn.Module):
        return list(model.head.parameters())
    raise ValueError(f"head_lr_scale: {type(model).__name__} has no classifier head to tell apart")
