"""``timm:<name>``: any timm classifier as a gearsight model (architectures come from timm, never copied).

    create_model("timm:tf_efficientnet_lite0", num_classes=12)                         # random init
    create_model("timm:tf_efficientnet_lite0", num_classes=12, pretrained="hub")       # timm's weights
    create_model("timm:tf_efficientnet_lite0", num_classes=12, pretrained="efficientnet-lite0")
    create_model("timm:tf_efficientnet_lite0", num_classes=12, pretrained="weights.pth")

``pretrained`` is a build-time argument only (models/pretrained.py): the model file records
``arch="timm:<name>"`` and ``arch_config`` without it, so loading a model file builds the timm
network with ``pretrained=False`` and loads the file's own weights: no download, no package.

The wrapper holds the timm network as ``.net`` (state dict keys ``net.*``) and adds what the
trainer asks of a model: ``head_parameters()`` (for ``head_lr_scale``) and ``frozen_parameters(epoch)``
(for ``freeze_epochs``), plus BatchNorm handling for fine-tuning (``bn_freeze``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from gearsight.models.pretrained import HUB, TIMM_PREFIX

BN_FREEZE = ("off", "freeze-epochs", "always")


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("timm: architectures need the timm package (pip install timm)") from None
    return timm


class TimmClassifier(nn.Module):
    """A timm classifier plus the fine-tuning hooks gearsight's trainer uses.

    Fine-tuning settings (set by gearsight.train.build_model from TrainConfig; inert at inference):
    - ``freeze_epochs``: the backbone (everything but the classifier) gets no updates in epochs
      ``0 .. freeze_epochs-1``; only the head trains. Through ``frozen_parameters``, which
      ``train_one_epoch`` honours; this method also unfreezes the backbone afterwards.
    - ``bn_freeze``: "off" (backbone BatchNorm trains as usual: batch statistics, running stats
      updated), "freeze-epochs" (BatchNorm layers stay in eval mode, i.e. keep the pretrained running
      statistics, while the backbone is frozen), "always" (eval mode for the whole run). The BN scale
      and shift still train whenever the backbone does.
    - ``freeze_stages``: the stem and the first N stages (``blocks[:N]``) never train (weights fixed, their
      BatchNorm in eval mode): a fixed feature extractor for edges and colours. It also skips their
      backward pass: at 128 px on EfficientNet-Lite0, N=2 makes a training step 1.6x faster, N=3
      1.9x (the early stages hold the large feature maps; bench/bench_freeze.py, docs/BENCHMARKS.md).
    """

    def __init__(self, name: str, num_classes: int, pretrained: bool = False, **timm_kwargs):
        super().__init__()
        timm = _timm()
        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r} (timm.list_models() lists them)")
        self.name = name
        self.net = timm.create_model(name, num_classes=num_classes, pretrained=pretrained, **timm_kwargs)
        self.freeze_epochs = 0
        self.bn_freeze = "off"
        self.freeze_stages = 0
        self._epoch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- head / backbone split
    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.net.get_classifier().parameters())

    def head_keys(self) -> set[str]:
        """State-dict names (within ``.net``) of the classifier's parameters and buffers."""
        head = self.net.get_classifier()
        ids = {id(t) for t in [*head.parameters(), *head.buffers()]}
        named = [*self.net.named_parameters(), *self.net.named_buffers()]
        return {n for n, t in named if id(t) in ids}

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head_parameters()}
        fixed = {id(p) for m in self._stem_and_stages(self.freeze_stages) for p in m.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head | fixed]

    def _stem_and_stages(self, n: int) -> list[nn.Module]:
        """The stem and the first ``n`` stages, for timm's EfficientNet/MobileNet family (conv_stem, bn1,
        blocks); other architectures name their stages differently, so they are refused by name."""
        if not n:
            return []
        if not all(hasattr(self.net, a) for a in ("conv_stem", "bn1", "blocks")):
            raise ValueError(f"freeze_stages: timm:{self.name} has no conv_stem/bn1/blocks to freeze "
                             "(supported: the EfficientNet/MobileNet family)")
        if not 0 < n <= len(self.net.blocks):
            raise ValueError(f"freeze_stages={n}: timm:{self.name} has {len(self.net.blocks)} stages")
        return [self.net.conv_stem, self.net.bn1, *self.net.blocks[:n]]

    def _backbone_norms(self) -> list[nn.Module]:
        head = set(self.net.get_classifier().modules())
        return [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in head]

    # -- trainer hooks
    def configure_finetuning(self, freeze_epochs: int = 0, bn_freeze: str = "off",
                             freeze_stages: int = 0) -> "TimmClassifier":
        if bn_freeze not in BN_FREEZE:
            raise ValueError(f"bn_freeze={bn_freeze!r}: expected one of {', '.join(BN_FREEZE)}")
        if freeze_epochs < 0:
            raise ValueError(f"freeze_epochs={freeze_epochs}: must be >= 0")
        if freeze_stages < 0:
            raise ValueError(f"freeze_stages={freeze_stages}: must be >= 0")
        self.freeze_epochs, self.bn_freeze, self.freeze_stages = int(freeze_epochs), bn_freeze, int(freeze_stages)
        for module in self._stem_and_stages(self.freeze_stages):
            for p in module.parameters():
                p.requires_grad_(False)  # before the optimizer is built, so it never holds them
        return self

    def _bn_frozen(self) -> bool:
        return self.bn_freeze == "always" or (self.bn_freeze == "freeze-epochs" and self._epoch < self.freeze_epochs)

    def train(self, mode: bool = True) -> "TimmClassifier":
        super().train(mode)
        if mode and self._bn_frozen():
            for m in self._backbone_norms():
                m.eval()
        if mode:
            for module in self._stem_and_stages(self.freeze_stages):
                module.eval()  # fixed stages keep the pretrained BN statistics too
        return self

    def frozen_parameters(self, epoch: int) -> list[nn.Parameter]:
        """Backbone parameters while ``epoch < freeze_epochs``, else none (and the backbone trains again).

        train_one_epoch calls this after ``model.train()`` at the start of every epoch; outside DDP it
        turns ``requires_grad`` off for what is returned, so the backbone is re-enabled here.
        """
        self._epoch = epoch
        self.train(self.training)  # BN mode for this epoch
        backbone = self.backbone_parameters()
        if epoch < self.freeze_epochs:
            return backbone
        if self.freeze_epochs:
            for p in backbone:
                p.requires_grad_(True)
        return []


def create_timm_model(name: str, num_classes: int, pretrained: str | None = None, pretrained_strict: bool = True,
                      **timm_kwargs) -> TimmClassifier:
    """Build ``timm:<name>``; ``pretrained``: None/"" (random), "hub" (timm's loader), an alias or a PATH.

    ``timm_kwargs`` go to ``timm.create_model`` (e.g. drop_rate, drop_path_rate).
    """
    from gearsight.models.pretrained import load_pretrained_weights, resolve_weights_path

    pretrained = pretrained or ""
    model = TimmClassifier(name, num_classes, pretrained=(pretrained == HUB), **timm_kwargs)
    if pretrained and pretrained != HUB:
        load_pretrained_weights(model.net, resolve_weights_path(pretrained), name, model.head_keys(),
                                strict=pretrained_strict)
    return model


def is_timm_arch(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)
