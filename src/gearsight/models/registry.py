"""The architecture registry: ``register_model(name)`` and ``create_model(name, num_classes=..., **config)``.

Its own module so the architectures (airnet, gearnet, ...) import the decorator from here, not
from the package that imports them: no import cycle. ``gearsight.models`` imports every
architecture, so its ``create_model`` knows them all.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """gearsight's own architectures; any timm classifier is also available as ``timm:<name>``."""
    return sorted(_REGISTRY)


TIMM_PREFIX = "timm:"  # "timm:<name>": a timm architecture (models/timm_models.py); timm is imported only then


def create_model(name: str, num_classes: int, **config) -> nn.Module:
    if name.startswith(TIMM_PREFIX):
        from gearsight.models.timm_models import create_timm_model

        return create_timm_model(name[len(TIMM_PREFIX):], num_classes=num_classes, **config)
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}, or timm:<name>")
    return _REGISTRY[name](num_classes=num_classes, **config)
