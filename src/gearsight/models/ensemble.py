"""A seed ensemble in one model file: N copies of one architecture, their probabilities averaged.

Why: the from-scratch gear net trained on 1,490 photos lands anywhere in 97.7-99.1% test accuracy
depending on the seed alone (docs/BENCHMARKS.md, "More pixels do not fix the seed spread"); the
photos it gets wrong differ from seed to seed except a few hard ones. Averaging the probabilities
of seeds cancels the seed-specific errors, which neither more pixels nor more epochs did.

The output is ``log(mean_i softmax(member_i(x)))``: log-probabilities, so everything downstream
that applies a softmax to "logits" (predict, evaluate, ONNX export, the service) gets the averaged
probabilities unchanged, and the model file stays an ordinary single network to every consumer.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gearsight.models.registry import create_model, register_model


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        # logsumexp, not log(mean(exp)): stays finite when a member is certain (log-prob -1e4)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


@register_model("ensemble")
def create_ensemble(num_classes: int, member_arch: str, n_members: int, member_config: dict | None = None) -> Ensemble:
    """``n_members`` fresh ``member_arch`` networks (weights come from the model file)."""
    if member_arch == "ensemble":
        raise ValueError("an ensemble's members cannot be ensembles")
    if not 1 <= int(n_members) <= 64:
        raise ValueError(f"n_members must be 1..64, got {n_members}")
    return Ensemble([create_model(member_arch, num_classes=num_classes, **(member_config or {}))
                     for _ in range(int(n_members))])
