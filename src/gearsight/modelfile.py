"""The self-describing model file, classifier and detector alike: one writer, one loader.

A model file is one ``.safetensors`` file: the weights as plain tensors plus a JSON header entry
``gearsight`` that says how to rebuild and feed the network (architecture name and config, class
names, input size, resize mode, normalization; a detector's ``extra["task"] == "detection"``).
Loading parses JSON and raw tensors only, never a pickle, so a model file from a stranger cannot
run code (unlike ``torch.load``): ``load_model_file`` is the one loader, ``load_model`` (classifier)
and ``detect.predict.load_detector`` differ only in how they build the network.

Torch-free at import (the serving process reads specs through ``read_spec``). Training checkpoints
for ``--resume`` are gearsight.checkpoint.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from gearsight.files import atomic_write

FORMAT = "gearsight-model"
FORMAT_VERSION = 1


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and preprocess its input exactly as in training."""

    arch: str
    arch_config: dict[str, Any]
    classes: list[str]
    input_size: int  # square side, pixels
    resize: str = "pad"  # see gearsight.image.resize.fit_square
    pad_fill: int = 255
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # on 0..1 pixel scale
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: metrics, data, git, ...

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<model>") -> "ModelSpec":
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: the gearsight header is not valid JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{source}: not a gearsight model file (format={meta.get('format')!r})")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{source}: model format {meta['format_version']} is newer than this gearsight")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in meta.items() if k in known})


def save_model(path: str | os.PathLike, model, spec: ModelSpec) -> None:
    """Write weights + spec to ``path`` atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"gearsight": spec.to_json()}))


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """The spec alone, without loading weights (numpy-free: reads the safetensors JSON header)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: too short to be a model file")
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors model file (header size {n})")
        header = json.loads(f.read(n))
    meta = header.get("__metadata__") or {}
    if "gearsight" not in meta:
        raise ValueError(f"{path}: safetensors file without a gearsight header")
    return ModelSpec.from_json(meta["gearsight"], str(path))


def load_model_file(path: str | os.PathLike, build: Callable[[ModelSpec], Any],
                    check: Callable[[ModelSpec], None] | None = None):
    """``(model in eval mode, spec)``: ``check(spec)`` may refuse the file (raise), ``build(spec)`` makes
    the untrained network, whose weights then come from the file's tensors (safetensors: no pickle)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    spec = read_spec(path)
    if check is not None:
        check(spec)
    model = build(spec)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), spec


def load_model(path: str | os.PathLike):
    """Rebuild a classifier from its model file: returns ``(model in eval mode, spec)``."""
    from gearsight.models import create_model

    return load_model_file(path, lambda spec: create_model(spec.arch, num_classes=len(spec.classes),
                                                           **spec.arch_config))


def save_ensemble(member_paths: list[str | os.PathLike], path: str | os.PathLike, extra: dict | None = None) -> ModelSpec:
    """Combine model files of one architecture, classes and preprocessing into one ensemble model file
    (models/ensemble.py). Returns the ensemble's spec."""
    from gearsight.models.ensemble import Ensemble

    loaded = [load_model(p) for p in member_paths]
    first = loaded[0][1]
    for (_, spec), p in zip(loaded[1:], member_paths[1:]):
        same = (spec.arch, spec.arch_config, spec.classes, spec.input_size, spec.resize, spec.pad_fill,
                spec.mean, spec.std) == (first.arch, first.arch_config, first.classes, first.input_size,
                                         first.resize, first.pad_fill, first.mean, first.std)
        if not same:
            raise ValueError(f"{p}: architecture, classes or preprocessing differ from {member_paths[0]}")
    spec = ModelSpec(arch="ensemble", arch_config={"member_arch": first.arch, "member_config": first.arch_config,
                                                   "n_members": len(loaded)},
                     classes=first.classes, input_size=first.input_size, resize=first.resize,
                     pad_fill=first.pad_fill, mean=first.mean, std=first.std, extra=extra or {})
    save_model(path, Ensemble([model for model, _ in loaded]), spec)
    return spec
