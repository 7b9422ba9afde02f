"""One training step's optimizer and precision: ``make_optimizer`` (the recipe's SGD parameter
groups, or Muon on the conv filters: ``MuonSGD``) and ``resolve_amp`` / ``autocast_for`` (bf16 or
fp32, and why).

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
    """``cfg.optimizer``: "sgd" (below) or "muon" (the same SGD groups, but the conv filters in a
    Muon group of their own: ``MuonSGD``).

    Nesterov SGD in two groups: weights (decayed) and 1-d parameters (biases, norm scales).

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
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer != "muon":
        raise ValueError(f"optimizer={cfg.optimizer!r}: expected 'sgd' or 'muon'")
    filters = {id(p) for p in trainable if p.ndim == 4}
    if not filters:
        raise ValueError(f"optimizer 'muon': {type(model).__name__} has no trainable conv filters")
    groups = [{**g, "params": [p for p in g["params"] if id(p) not in filters]} for g in groups]
    muon = {"params": [p for p in trainable if id(p) in filters], "muon": True, "lr": cfg.muon_lr,
            "momentum": cfg.muon_momentum, "weight_decay": 0.0}
    return MuonSGD([muon] + [g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def orthogonalize(update: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """U S V^T -> about U V^T for a 2-d matrix, by 3 quintic Newton-Schulz steps (Muon's).

    The coefficients (Keller Jordan's) push the small singular values up fast rather than converge:
    S ends in ~[0.5, 1.5], which trains as well as the exact U V^T at a fraction of an SVD's cost.
    fp32 on CPUs (exact on every CPU, bf16 or not; the matrices are at most 256 x 2304: ~1% of a
    CIFAR step), bf16 on GPUs as in airbench.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update.to(torch.bfloat16 if update.is_cuda else torch.float32)
    x = x / (x.norm() + eps)  # the top singular value <= 1
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(update.dtype)


class MuonSGD(torch.optim.SGD):
    """Nesterov SGD, except for groups marked ``muon``: their update is the orthogonalized Nesterov
    momentum of the gradient (Muon), and each filter tensor is first rescaled to Frobenius norm
    sqrt(out_channels), which stands in for weight decay (airbench94_muon: 94% on CIFAR-10 in 8
    epochs where SGD needs ~10).

    Written here because torch.optim.Muon takes 2-d parameters only (conv filters are 4-d; the
    update is orthogonalized on their (out, in*k*k) view) and has no norm projection. One optimizer,
    not two, so the one-cycle schedule, the time budget's re-plan and the resume checkpoint treat
    every group alike.
    """

    @torch.no_grad()
    def step(self, closure=None):
        every = self.param_groups
        self.param_groups = [g for g in every if not g.get("muon")]  # SGD.step walks self.param_groups
        try:
            loss = super().step(closure)
        finally:
            self.param_groups = every
        for group in every:
            if group.get("muon"):
                self._muon_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            buf = state.setdefault("momentum_buffer", torch.zeros_like(p.grad))
            buf.mul_(group["momentum"]).add_(p.grad)
            g = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
            p.add_(orthogonalize(g.reshape(len(g), -1)).view_as(p), alpha=-group["lr"])


def _head_parameters(model: nn.Module) -> list[nn.Parameter]:
    if hasattr(model, "head_parameters"):
        return list(model.head_parameters())
    if isinstance(getattr(model, "head", None), nn.Module):
        return list(model.head.parameters())
    raise ValueError(f"head_lr_scale: {type(model).__name__} has no classifier head to tell apart")
