"""The detector model file and :class:`Detector`, the one inference entry point (CLI, notebook, server).

The file is gearsight's usual safetensors + JSON header (gearsight.modelfile): ``arch`` is the
torchvision detector name, ``arch_config`` the full DetectorConfig (min_size, max_size, anchors, ...),
``classes`` the class names, ``extra["task"] == "detection"`` and ``extra["category_ids"]`` the
source's category ids. Preprocessing is the model's own (GeneralizedRCNNTransform: ImageNet
normalization, resize to min_size/max_size), so inference equals training by construction; boxes come
back in the input image's pixels. The model runs where its weights are (``Detector.load(path, device)``,
gearsight.devices); images are decoded on the CPU and moved there, outputs come back as numpy.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from gearsight.detect.answer import detection_answer
from gearsight.detect.model import ARCHS, IMAGE_MEAN, IMAGE_STD, DetectorConfig, create_detector
from gearsight.devices import model_device, resolve_device
from gearsight.image.decode import ImageSource, decode_image
from gearsight.modelfile import ModelSpec, load_model_file, save_model


def detector_spec(arch: str, config: DetectorConfig, classes: list[str], category_ids: list[int],
                  extra: dict[str, Any] | None = None) -> ModelSpec:
    return ModelSpec(arch=arch, arch_config=config.to_dict(), classes=list(classes), input_size=config.min_size,
                     resize="shorter_side", pad_fill=0, mean=IMAGE_MEAN, std=IMAGE_STD,
                     extra={"task": "detection", "category_ids": list(category_ids), **(extra or {})})


def save_detector(path: str | os.PathLike, model, spec: ModelSpec) -> None:
    save_model(path, model, spec)  # atomic write of weights + header


def load_detector(path: str | os.PathLike):
    """``(model in eval mode, spec)`` from a detector model file (modelfile.load_model_file)."""
    def check(spec: ModelSpec) -> None:
        if spec.extra.get("task") != "detection" or spec.arch not in ARCHS:
            raise ValueError(f"{path}: not a detector model file (arch {spec.arch!r}); "
                             f"`gearsight predict` is the classifier's command")

    def build(spec: ModelSpec):
        return create_detector(spec.arch, len(spec.classes), DetectorConfig.from_dict(spec.arch_config))

    return load_model_file(path, build, check)


def _as_tensor(image: ImageSource | np.ndarray) -> torch.Tensor:
    pixels = image if isinstance(image, np.ndarray) else decode_image(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {pixels.shape} dtype {pixels.dtype}")
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255)


@torch.inference_mode()
def run_model(model, images: Sequence[ImageSource | np.ndarray], batch_size: int = 4) -> list[dict]:
    """torchvision's output per image: numpy boxes (xyxy, image pixels), labels (1-based), scores.

    Runs on the model's device: images go there, outputs come back to the CPU."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = [_as_tensor(im).to(device) for im in images[start:start + batch_size]]
        outputs += [{k: v.cpu().numpy() for k, v in out.items()} for out in model(batch)]
    model.train(was_training)
    return outputs


class Detector:
    """A loaded detector: ``Detector.load(path).predict([path_or_bytes_or_array, ...])``."""

    def __init__(self, model, spec: ModelSpec, device: str | torch.device | None = None):
        """``device``: a gearsight.devices name; None keeps the model where it already is."""
        self.device = model_device(model) if device is None else resolve_device(device)
        self.model = model.eval().to(self.device)
        self.spec = spec

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = "auto") -> "Detector":
        """Rebuild a detector model file's network on ``device`` (default "auto": the GPU when there is one)."""
        return cls(*load_detector(path), device=device)

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    def raw_outputs(self, images: Sequence[ImageSource | np.ndarray], batch_size: int = 4) -> list[dict]:
        return run_model(self.model, images, batch_size)

    def predict(self, images: Sequence[ImageSource | np.ndarray], min_score: float = 0.0,
                batch_size: int = 4) -> list[dict[str, Any]]:
        """Per image: ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [name, ...], "scores": [...]}``.

        ``images`` are paths, encoded bytes, or HxWx3 uint8 RGB arrays; boxes are in their pixels.
        """
        if isinstance(images, (str, os.PathLike, bytes, bytearray)) or (
                isinstance(images, np.ndarray) and images.ndim == 3):
            raise TypeError("predict takes a list of images; wrap a single image in [ ]")
        return [detection_answer(out["boxes"], out["labels"], out["scores"], self.classes, min_score)
                for out in self.raw_outputs(images, batch_size)]
