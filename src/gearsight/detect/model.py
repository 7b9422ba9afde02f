"""Faster R-CNN factory and the detector model file.

Everything comes from torchvision (FasterRCNN, BackboneWithFPN, AnchorGenerator, RoI heads); this
module only picks the pieces from a JSON-able config, so a model file can rebuild the exact network
from its header. Backbones are built with ``weights=None`` and trainable BatchNorm: no download ever
happens, and from-scratch training needs BN statistics that move (torchvision freezes BN only when it
loads pretrained weights).

Two architecture names:
- ``fasterrcnn_mobilenet_v3_large_fpn`` (default). With no overrides it is torchvision's network
  layer for layer (so ``--weights`` can load torchvision's checkpoint); the config can move the FPN to
  finer stages, narrow it, resize anchors and shrink the box head, which is what CPU training needs.
- ``fasterrcnn_resnet50_fpn``: torchvision's builder as is.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ARCHS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn")
DEFAULT_ARCH = ARCHS[0]
# torchvision's ImageNet normalization, applied inside the model (GeneralizedRCNNTransform).
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


@dataclass
class DetectorConfig:
    """Network shape. Defaults reproduce torchvision's fasterrcnn_mobilenet_v3_large_fpn."""

    min_size: int = 800  # shorter image side fed to the network, pixels
    max_size: int = 1333  # cap on the longer side, pixels
    # mobilenet only: indices into the backbone's stride stages (0..5); torchvision uses [4, 5] (both
    # stride 32). [3, 5] gives strides 16 and 32, which small objects need.
    returned_stages: list[int] = field(default_factory=lambda: [4, 5])
    fpn_channels: int = 256
    representation_size: int = 1024  # width of the two-layer box head
    # one tuple of anchor sizes (pixels, at network scale) per feature level incl. the extra pool level;
    # None = torchvision's ((32, 64, 128, 256, 512),) on every level.
    anchor_sizes: list[list[float]] | None = None
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_score_thresh: float = 0.05
    box_batch_size_per_image: int = 512
    roi_sampling_ratio: int = 2  # bilinear samples per RoI bin side; 1 makes RoIAlign's backward 4x cheaper
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown detector config field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mobilenet_fpn(cfg: DetectorConfig):
    from torch import nn
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    features = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d).features
    # Same stage bookkeeping as torchvision's _mobilenet_extractor (a private helper).
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    if not cfg.returned_stages or not all(0 <= s < len(stages) for s in cfg.returned_stages):
        raise ValueError(f"returned_stages must be indices in 0..{len(stages) - 1}, got {cfg.returned_stages}")
    return_layers = {str(stages[s]): str(i) for i, s in enumerate(cfg.returned_stages)}
    in_channels = [features[stages[s]].out_channels for s in cfg.returned_stages]
    return BackboneWithFPN(features, return_layers, in_channels, cfg.fpn_channels, extra_blocks=LastLevelMaxPool())


def create_detector(arch: str, num_classes: int, config: DetectorConfig | None = None):
    """A torchvision FasterRCNN with random weights; ``num_classes`` excludes the background."""
    from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    cfg = config or DetectorConfig()
    common = {k: getattr(cfg, k) for k in (
        "min_size", "max_size", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
        "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_score_thresh",
        "box_batch_size_per_image", "box_score_thresh", "box_detections_per_img")}
    common.update(image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    if arch == "fasterrcnn_resnet50_fpn":
        if cfg.anchor_sizes is not None:
            levels = len(cfg.anchor_sizes)
            common["rpn_anchor_generator"] = AnchorGenerator(
                tuple(tuple(s) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * levels)
        return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1, **common)
    if arch != "fasterrcnn_mobilenet_v3_large_fpn":
        raise ValueError(f"unknown detector arch {arch!r}; known: {', '.join(ARCHS)}")
    backbone = _mobilenet_fpn(cfg)
    levels = len(cfg.returned_stages) + 1  # + the max-pool level
    sizes = cfg.anchor_sizes or [[32, 64, 128, 256, 512]] * levels
    if len(sizes) != levels:
        raise ValueError(f"anchor_sizes needs {levels} lists (one per FPN level), got {len(sizes)}")
    anchors = AnchorGenerator(tuple(tuple(s) for s in sizes), (tuple(cfg.aspect_ratios),) * levels)
    names = [str(i) for i in range(len(cfg.returned_stages))]
    rep = cfg.representation_size
    return FasterRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=cfg.roi_sampling_ratio),
        box_head=TwoMLPHead(cfg.fpn_channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes + 1), **common)


def load_torchvision_weights(model, path: str | os.PathLike) -> tuple[int, list[str]]:
    """Copy every tensor of a local torchvision checkpoint whose name and shape match ``model``.

    Returns (tensors loaded, names skipped). The class head of a COCO checkpoint (91 classes) never
    fits a new dataset, and is meant to be skipped: that is ordinary fine-tuning.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise ValueError(f"{path}: no tensor matches this network (is it a {type(model).__name__} checkpoint?)")
    model.load_state_dict(fit, strict=False)
    return len(fit), sorted(set(own) - set(fit))


# "cpu": what from-scratch training on a few CPU cores needs (measured on BCCD, 1 thread, batch 4 of
# 320x320: 1.34 s/img with the torchvision shape vs 0.21 with this preset, bench/bench_detect_step.py):
# - FPN on strides 16 and 32 ([3, 5]) instead of two stride-32 maps: small objects get a finer grid;
# - 128 FPN channels and a 512-wide box head: the FPN/RPN convs and fc6 cost a quarter;
# - fewer proposals and 128 sampled RoIs per image, 1 sample per RoI bin: RoIAlign's backward pass
#   (serial on CPU) was a quarter of the step time at torchvision's settings;
# - score threshold 0.01: low-confidence boxes still add to COCO AP.
PRESETS: dict[str, dict[str, Any]] = {
    "torchvision": {},
    "cpu": {"min_size": 320, "max_size": 427, "returned_stages": [3, 5], "fpn_channels": 128,
            "representation_size": 512, "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
            "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 300, "box_batch_size_per_image": 128,
            "roi_sampling_ratio": 1, "box_score_thresh": 0.01},
}


def auto_anchor_sizes(boxes_wh, scale: float, levels: int, per_level: int = 2,
                      scale_range: tuple[float, float] = (1.0, 1.0)) -> list[list[float]]:
    """Anchor sizes spaced geometrically over the data's box sizes at network scale.

    ``boxes_wh`` are (N, 2) widths/heights in image pixels; ``scale`` maps them to network pixels.
    Sizes run from the 1st to the 99th percentile of sqrt(w*h), widened by the scale jitter, and are
    dealt to the levels smallest-first (fine stride -> small anchors), ``per_level`` each: the RPN head
    is shared across levels, so every level needs the same number of anchors.
    """
    import numpy as np

    wh = np.asarray(boxes_wh, np.float64).reshape(-1, 2)
    if len(wh) == 0:
        raise ValueError("cannot fit anchors: the training data has no boxes")
    side = np.sqrt(wh[:, 0] * wh[:, 1]) * scale
    lo, hi = np.percentile(side, 1) * scale_range[0], np.percentile(side, 99) * scale_range[1]
    sizes = np.geomspace(max(lo, 4.0), max(hi, lo * 1.5, 8.0), levels * per_level)
    return [[round(float(s), 1) for s in sizes[i * per_level:(i + 1) * per_level]] for i in range(levels)]
