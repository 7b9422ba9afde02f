"""AirNet: the CIFAR-10 network of Keller Jordan's cifar10-airbench (airbench94), rebuilt for gearsight.

What it keeps from airbench94, and why (airbench's own ablations, https://arxiv.org/abs/2404.00498):
- A frozen 2x2 "whitening" stem, stride 1, initialised from the eigenvectors of the training data's
  2x2 patch covariance (each eigenvector and its negative, so 24 channels for RGB): the first layer
  starts decorrelated, which buys about an epoch. Only its bias trains, and only for the first
  ``whiten_bias_epochs``.
- Three blocks conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU at 31 -> 15 -> 7 -> 3 px,
  no residual adds (not needed at this depth).
- BatchNorm with the scale frozen at 1 (bias only), eps 1e-12, momentum 0.4 (airbench's 0.6 in its
  convention): fewer parameters for a few-epoch run; fast-moving statistics follow the weights.
- Convs start as identity maps on their first ``c_in`` output channels (dirac init).
- Global 3x3 max pool, a bias-free linear head and a fixed 1/9 logit scale (tempers early logits).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gearsight.models.registry import register_model


class BiasOnlyBatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
    return conv


class AirBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = dirac_conv(c_in, c_out)
        self.norm1 = BiasOnlyBatchNorm(c_out)
        self.conv2 = dirac_conv(c_out, c_out)
        self.norm2 = BiasOnlyBatchNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class WhiteningStem(nn.Conv2d):
    """2x2 conv whose filters whiten the data's 2x2 patches; the weight never trains."""

    def __init__(self, c_in: int = 3, patch: int = 2):
        super().__init__(c_in, 2 * c_in * patch * patch, patch, bias=True)
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the filters from (N, C, H, W) normalized images (airbench uses 5,000)."""
        c, k = self.in_channels, self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        scaled = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).flip(0)
        filters = scaled.reshape(c * k * k, c, k, k).to(self.weight.dtype)
        self.weight.copy_(torch.cat([filters, -filters]))


class AirNet(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = (64, 256, 256), logit_scale: float = 1 / 9,
                 whiten_bias_epochs: int = 3):
        super().__init__()
        self.whiten = WhiteningStem()
        blocks, c = [], self.whiten.out_channels
        for w in widths:
            blocks.append(AirBlock(c, w))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.whiten_bias_epochs = whiten_bias_epochs

    def fit_to_data(self, images: torch.Tensor) -> None:
        """Called by the trainer once, with normalized training images, before the first step."""
        self.whiten.fit(images)

    def frozen_parameters(self, epoch: int) -> list[nn.Parameter]:
        """Parameters the trainer must not update in this epoch."""
        return [self.whiten.bias] if epoch >= self.whiten_bias_epochs else []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.gelu(self.whiten(x)))
        return torch.amax(x, dim=(2, 3))  # = airbench's MaxPool2d(3) on the 3x3 map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


@register_model("airnet")
def create_airnet(num_classes: int, widths=(64, 256, 256), stem_kind: str = "whiten", norm: str = "batch",
                  whiten_bias_epochs: int = 3) -> AirNet:
    if stem_kind not in ("whiten", "conv") or norm != "batch":  # "conv": TrainConfig's default, ignored
        raise ValueError(f"airnet has a whitening stem and BatchNorm (got stem={stem_kind!r}, norm={norm!r})")
    return AirNet(num_classes, tuple(widths), whiten_bias_epochs=whiten_bias_epochs)
