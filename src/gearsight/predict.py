"""Classifier: a loaded model plus exactly the preprocessing it was trained with.

    clf = gearsight.load("work/runs/gear/model.safetensors")
    clf.predict("boot.jpg")            # -> Prediction(label="boots", probability=0.99, top_k=[...])
    clf.predict([img1, img2])          # paths, PIL images or HxWx3 uint8 arrays, mixed

The model runs on ``device`` (gearsight.devices: "auto" = the GPU when PyTorch sees one); inputs are
decoded and packed on the CPU, moved there batch by batch, and probabilities come back as numpy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from gearsight.data.transforms import to_model_input
from gearsight.devices import model_device, resolve_device
from gearsight.image.decode import decode_image, to_rgb
from gearsight.image.resize import fit_square
from gearsight.modelfile import ModelSpec, load_model
from gearsight.tta import tta_logits

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]


@dataclass
class Prediction:
    label: str
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"label": self.label, "probability": self.probability,
                "top_k": [{"label": lbl, "probability": p} for lbl, p in self.top_k]}


def to_rgb_array(item: ImageLike) -> np.ndarray:
    """Any supported input -> H x W x 3 uint8 RGB (the decode rules of image/decode.py)."""
    if isinstance(item, (str, os.PathLike, bytes)):
        return decode_image(item)
    if isinstance(item, Image.Image):
        return np.asarray(to_rgb(item))
    if isinstance(item, np.ndarray):
        arr = item[..., None].repeat(3, -1) if item.ndim == 2 else item
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {item.shape}")
        if arr.dtype != np.uint8:
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
                raise ValueError("a non-uint8 image array must hold finite pixel values in 0..255")
            arr = arr.round().astype(np.uint8)
        return np.asarray(to_rgb(Image.fromarray(arr))) if arr.shape[2] == 4 else arr
    raise TypeError(f"cannot predict on a {type(item).__name__}; pass a path, PIL image, ndarray or bytes")


class Classifier:
    def __init__(self, model: torch.nn.Module, spec: ModelSpec, device: str | torch.device | None = None):
        """``device``: a gearsight.devices name; None keeps the model where it already is."""
        where = model_device(model) if device is None else resolve_device(device)
        self.model = model.eval().to(device=where, memory_format=torch.channels_last)
        self.spec = spec
        self.device = where

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = "auto") -> "Classifier":
        """Rebuild a model file's network on ``device`` (default "auto": the GPU when there is one)."""
        model, spec = load_model(path)
        return cls(model, spec, device)

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    @property
    def tta_translate(self) -> int:
        """The shift TTA the model was validated with (airbench's level 2; 0 for most models)."""
        return int(self.spec.extra.get("config", {}).get("tta_translate", 0))

    @torch.no_grad()
    def predict_proba(self, items: Sequence[ImageLike], tta: bool = True, batch_size: int = 128) -> np.ndarray:
        """(N, classes) probabilities; ``tta`` averages the image and its mirror, as in evaluation."""
        s = self.spec
        if not items:
            return np.zeros((0, len(self.classes)), np.float32)
        pixels = np.stack([fit_square(to_rgb_array(it), s.input_size, s.resize, s.pad_fill) for it in items])
        return self.predict_packed(pixels, tta, batch_size)

    @torch.no_grad()
    def predict_packed(self, images: np.ndarray, tta: bool = True, batch_size: int = 256) -> np.ndarray:
        """Probabilities for already packed uint8 NHWC images (same size and resize as the model).

        ``tta``: the test-time augmentation of training's validation (gearsight/tta.py)."""
        out = []
        for start in range(0, len(images), batch_size):
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])),
                               self.spec.mean, self.spec.std).to(self.device)  # normalised on the CPU, as in training
            logits = tta_logits(self.model, x, flip=tta, translate=self.tta_translate if tta else 0)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    def predict(self, x: ImageLike | Sequence[ImageLike], top_k: int = 5):
        """One input -> a Prediction; a list -> a list of Predictions."""
        single = not isinstance(x, (list, tuple))
        items = [x] if single else list(x)
        probs = self.predict_proba(items)
        preds = []
        for p in probs:
            order = np.argsort(-p)[: max(1, top_k)]
            top = [(self.classes[i], float(p[i])) for i in order]
            preds.append(Prediction(top[0][0], top[0][1], top))
        return preds[0] if single else preds
