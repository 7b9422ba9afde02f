"""A detector's training configuration from the data, and the BCCD recipe, callable from Python.

    from gearsight.detect import recipe
    from gearsight.detect.train import fit

    cfg = recipe.train_config(train, **recipe.BCCD, time_budget_min=57)   # bench/bench_bccd.py's run
    fit(train, val, "work/bccd_run", cfg)

``train_config`` is what ``gearsight detect train`` calls with its options, so a Python run and a CLI
run with the same options are the same run. Anchors ``"auto"`` (the CLI's ``--anchors auto``) are
fitted to the training boxes at network scale (``anchor_sizes_for``), which the 0.889 BCCD result
needs: the preset's anchors are made for COCO photos, not 26-125 px cells.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gearsight.detect.model import DEFAULT_ARCH, PRESETS, DetectorConfig, auto_anchor_sizes
from gearsight.detect.records import DetectionData
from gearsight.detect.train import DetectTrainConfig

# The BCCD recipe (docs/DETECTION.md, "The BCCD recipe", says why each): train_config's keywords.
# bench/bench_bccd.py runs it through the CLI (``cli_args(BCCD)``) inside a wall-clock budget.
BCCD: dict[str, Any] = {
    "preset": "cpu",                # light FPN (strides 16/32, 128 ch), 512-wide box head, 128 RoIs/img
    "min_size": 320,                # 640x480 -> 427x320: RBC ~68 px, platelets ~26 px, WBC ~125 px
    "max_size": 427,
    "anchors": "auto",              # 6 sizes from the 1st..99th percentile of box size, x scale jitter
    "aspect_ratios": (0.5, 1, 2),
    "vflip": True,                  # a microscope slide has no up
    "scale_range": (0.75, 1.33),
    "batch_size": 4,
    "lr": 0.04,                     # SGD nesterov; warmup then cosine over the time budget
    "warmup_steps": 200,
    "weight_decay": 1e-4,
    "select": "AP50",               # the claim is about mAP@0.5
    "eval_every": 3,                # validation costs ~1/4 epoch: only every 3rd epoch...
    "eval_from": 0.25,              # ...from the second quarter on: the curve shows how AP grows
    "threads": 1,                   # see gearsight.detect.train: 2 threads collapse under contention
    "workers": 1,
    "epochs": 10000,                # the time budget ends the run
}

_CLI_NAMES = {"warmup_steps": "--warmup", "time_budget_min": "--time-budget"}
_CLI_OFF = {"photometric": "--no-photometric"}  # on by default; False is a flag of its own


def anchor_levels(arch: str, cfg: DetectorConfig) -> int:
    """Feature levels that get anchors: the mobilenet FPN's returned stages + its pool level; ResNet's 5."""
    return len(cfg.returned_stages) + 1 if arch.startswith("fasterrcnn_mobilenet") else 5


def anchor_sizes_for(data: DetectionData, cfg: DetectorConfig, arch: str = DEFAULT_ARCH,
                     scale_range: Sequence[float] = (1.0, 1.0)) -> list[list[float]]:
    """Anchor sizes fitted to ``data``'s boxes (``--anchors auto``): the boxes are taken to network
    scale at the median image's scale (shorter side to min_size, unless the longer side hits
    max_size) and widened by the training scale jitter; see detect.model.auto_anchor_sizes."""
    records = data.records
    wh = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in records]) if records else np.zeros((0, 2))
    scales = [min(cfg.min_size / min(r.width, r.height), cfg.max_size / max(r.width, r.height)) for r in records]
    levels = anchor_levels(arch, cfg)
    lo, hi = scale_range
    return auto_anchor_sizes(wh, float(np.median(scales)) if scales else 1.0, levels, 1 if levels == 5 else 2,
                             (lo, hi))


def model_config(data: DetectionData, arch: str = DEFAULT_ARCH, preset: str = "cpu", min_size: int | None = None,
                 max_size: int | None = None, anchors: str | list[list[float]] = "auto",
                 aspect_ratios: Sequence[float] = (0.5, 1, 2),
                 scale_range: Sequence[float] = (0.75, 1.33)) -> DetectorConfig:
    """The network's configuration: ``preset`` (detect.model.PRESETS) with ``min_size``/``max_size``
    when given; ``anchors`` "auto" (fitted to ``data``), "default" (the preset's) or sizes per level."""
    fields = dict(PRESETS[preset])
    if min_size:
        fields["min_size"] = min_size
    if max_size:
        fields["max_size"] = max_size
    cfg = DetectorConfig.from_dict(fields)
    cfg.aspect_ratios = [float(r) for r in aspect_ratios]
    if anchors == "auto":
        cfg.anchor_sizes = anchor_sizes_for(data, cfg, arch, scale_range)
    elif anchors != "default":
        cfg.anchor_sizes = [[float(s) for s in level] for level in anchors]
    return cfg


def train_config(train: DetectionData, *, arch: str = DEFAULT_ARCH, preset: str = "cpu", min_size: int | None = None,
                 max_size: int | None = None, anchors: str | list[list[float]] = "auto",
                 aspect_ratios: Sequence[float] = (0.5, 1, 2), scale_range: Sequence[float] = (0.75, 1.33),
                 **fields: Any) -> DetectTrainConfig:
    """A DetectTrainConfig for ``train``: the network from ``model_config``, the rest from ``fields``
    (DetectTrainConfig's own: epochs, lr, vflip, ...)."""
    model = model_config(train, arch, preset, min_size, max_size, anchors, aspect_ratios, scale_range)
    return DetectTrainConfig(arch=arch, model=model, scale_range=tuple(scale_range), **fields)


def cli_args(options: dict[str, Any]) -> list[str]:
    """``train_config`` keywords as ``gearsight detect train`` options (BCCD -> ``--preset cpu ...``)."""
    args = []
    for key, value in options.items():
        flag = _CLI_NAMES.get(key, "--" + key.replace("_", "-"))
        if isinstance(value, bool):  # a flag: on (or, for the on-by-default ones, off) is its name alone
            args += [_CLI_OFF[key]] if key in _CLI_OFF and not value else [flag] if value and key not in _CLI_OFF else []
        elif value is not None:
            text = ",".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else (
                f"{value:g}" if isinstance(value, float) else str(value))
            args += [flag, text]
    return args
