"""The CNN of TensorFlow's CIFAR-10 tutorial (tensorflow/models tutorials/image/cifar10, ``cifar10.py``
``inference()`` and ``cifar10_input.py``), as a gearsight architecture: ``--arch tf_cifar10``.

Layers, as in ``inference()`` (TF's NHWC; here NCHW):
  conv 5x5, 64, ReLU -> max-pool 3x3 stride 2 (SAME) -> LRN
  conv 5x5, 64, ReLU -> LRN -> max-pool 3x3 stride 2 (SAME)
  dense 384, ReLU -> dense 192, ReLU -> linear num_classes (logits)
LRN is ``tf.nn.lrn(x, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)`` (class LRN). TF's SAME max-pool
pads at the bottom/right only, which is ``ceil_mode=True`` here. Initialisation is the tutorial's
(truncated normal, std 5e-2 / 0.04 / 1/192; biases 0, 0.1, 0.1, 0.1, 0).

The tutorial's input pipeline is part of the network, so the model file alone preprocesses as in
training (and ``gearsight export`` / ``serve`` need nothing else): the 32x32 input is cropped to
24x24 (random per image in training mode, central in eval mode), then in training mode brightness
(+-63) and contrast (x0.2..x1.8 about each channel's mean) are jittered, and every image is
standardized (``tf.image.per_image_standardization``). The jitter is in 0..255 pixel units, so the
model expects pixel values: train it with ``mean: [0, 0, 0]`` and ``std: [1/255] * 3``
(configs/cifar10-tf-tutorial.yaml). Left/right flips come from the trainer (``flip: true``).

``load_tf_weights`` copies a Keras model's weights (examples/tensorflow_cifar10.py --weights) into this
network: tests/test_tensorflow.py checks the two give the same logits.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gearsight.models.registry import register_model

CROP = 24  # cifar10_input.IMAGE_SIZE
BRIGHTNESS = 63.0  # random_brightness max_delta, pixel units
CONTRAST = (0.2, 1.8)  # random_contrast lower, upper


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1/sqrt(C*H*W)) over each image, as TensorFlow's op."""
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True).sqrt()
    return (x - mean) / std.clamp_min(1.0 / math.sqrt(n))


def random_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each image (tf.random_crop, per image)."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), device=x.device)
    left = torch.randint(0, w - size + 1, (n,), device=x.device)
    windows = x.unfold(2, size, 1).unfold(3, size, 1)  # N, C, h', w', size, size: a view
    return windows[torch.arange(n, device=x.device), :, top, left]  # copies only the chosen windows


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """tf.image.resize_image_with_crop_or_pad on a larger image: the central window."""
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    return x[:, :, top:top + size, left:left + size]


def jitter(x: torch.Tensor) -> torch.Tensor:
    """random_brightness(max_delta=63) then random_contrast(0.2, 1.8), an independent draw per image."""
    n = x.shape[0]
    delta = torch.empty(n, 1, 1, 1, device=x.device).uniform_(-BRIGHTNESS, BRIGHTNESS)
    factor = torch.empty(n, 1, 1, 1, device=x.device).uniform_(*CONTRAST)
    x = x + delta
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


class _LRNFunction(torch.autograd.Function):
    """y = x * d^-beta, d = bias + alpha * band(x^2), with the backward written out (as TF's LRNGrad):
    dx = g * d^-beta - 2 alpha beta x * band(g * y / d), the band matrix being symmetric.
    Autograd of the same expression runs twice as many full-size elementwise ops."""

    @staticmethod
    def forward(ctx, x, band, bias: float, alpha: float, beta: float):
        d = F.conv2d(x * x, band * alpha).add_(bias)
        p = d.pow(-beta)
        y = x * p
        ctx.save_for_backward(x, band, d, p, y)
        ctx.beta, ctx.alpha = beta, alpha
        return y

    @staticmethod
    def backward(ctx, g):
        x, band, d, p, y = ctx.saved_tensors
        t = F.conv2d(g * y / d, band)
        return g * p - (2 * ctx.alpha * ctx.beta) * x * t, None, None, None, None


class LRN(nn.Module):
    """tf.nn.lrn(x, depth_radius, bias, alpha, beta): x / (bias + alpha * sum of x^2 over 2r+1 channels)^beta.

    The channel-window sum is a 1x1 convolution with a fixed band matrix (one small matmul; torch's
    LocalResponseNorm pads and runs avg_pool3d); same values.
    """

    def __init__(self, channels: int, depth_radius: int = 4, bias: float = 1.0, alpha: float = 0.001 / 9.0,
                 beta: float = 0.75):
        super().__init__()
        idx = torch.arange(channels)
        band = ((idx[:, None] - idx[None, :]).abs() <= depth_radius).float()
        self.register_buffer("band", band.view(channels, channels, 1, 1), persistent=False)  # not in the model file
        self.bias, self.alpha, self.beta = bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing():
            return _LRNFunction.apply(x, self.band, self.bias, self.alpha, self.beta)
        return x * (self.bias + self.alpha * F.conv2d(x * x, self.band)).pow(-self.beta)


class TFCifar10Net(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5, padding=2)
        self.conv2 = nn.Conv2d(64, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)  # = TF's SAME padding for 24 -> 12 -> 6
        self.norm = LRN(64)  # tf.nn.lrn(x, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)
        side = math.ceil(math.ceil(CROP / 2) / 2)
        self.local3 = nn.Linear(64 * side * side, 384)
        self.local4 = nn.Linear(384, 192)
        self.head = nn.Linear(192, num_classes)
        for layer, std, bias in ((self.conv1, 5e-2, 0.0), (self.conv2, 5e-2, 0.1), (self.local3, 0.04, 0.1),
                                 (self.local4, 0.04, 0.1), (self.head, 1 / 192, 0.0)):
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.constant_(layer.bias, bias)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The tutorial's distorted_inputs() in training mode, inputs() in eval mode."""
        if self.training:
            return per_image_standardization(jitter(random_crop(x, CROP)))
        return per_image_standardization(centre_crop(x, CROP))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.pool(F.relu(self.conv1(self.prepare(x)))))
        x = self.pool(self.norm(F.relu(self.conv2(x))))
        x = x.permute(0, 2, 3, 1).flatten(1)  # TF's NHWC flatten order, so Keras weights map 1:1
        return F.relu(self.local4(F.relu(self.local3(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("tf_cifar10")
def create_tf_cifar10(num_classes: int, widths=None, stem_kind: str = "conv", norm: str = "batch") -> TFCifar10Net:
    # widths / stem_kind / norm are TrainConfig's generic options: the tutorial's net has fixed layers.
    return TFCifar10Net(num_classes)


def load_tf_weights(model: TFCifar10Net, weights: dict[str, np.ndarray]) -> TFCifar10Net:
    """Copy Keras weights ({layer}/kernel, {layer}/bias; HWIO conv kernels, (in, out) dense) into ``model``."""
    with torch.no_grad():
        for name in ("conv1", "conv2", "local3", "local4", "head"):
            layer = getattr(model, name)
            kernel = torch.from_numpy(np.asarray(weights[f"{name}/kernel"], dtype=np.float32))
            layer.weight.copy_(kernel.permute(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T)
            layer.bias.copy_(torch.from_numpy(np.asarray(weights[f"{name}/bias"], dtype=np.float32)))
    return model
