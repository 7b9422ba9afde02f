"""CNTK's ImageDeserializer transforms, named and parameterized as CNTK names them, on torch tensors.

    pipeline = transforms_from_config('''transforms = (
        { type = "Crop" ; cropType = "RandomSide" ; sideRatio = 0.8:1.0 ; jitterType = "UniRatio" } :
        { type = "Scale" ; width = 32 ; height = 32 ; channels = 3 ; interpolations = "linear" } :
        { type = "Mean" ; meanFile = "CIFAR-10_mean.xml" } )''')
    chw = pipeline(hwc_uint8_image, rng=sample_rng(seed, index, epoch))

Semantics follow CNTK 2.x's ImageTransformers.cpp (crop sizes, ratio jitter, 10 attempts then the
whole image, flip on by default for random crops, scale modes, HSV saturation, mean-image layout),
which the reader docs in ../shared/data/cntk/docs only sketch. Differences, all deliberate, are
listed in docs/MAPFILE.md. The config syntax (BrainScript records, ``a:b`` arrays, ``$var$``) is parsed by
``config.parse_config`` (which imports nothing from here); both the deserializer form (``transforms = (...)``) and the legacy ImageReader
form (``features = [ width = ... cropType = ... ]``) are read.

Images: a transform takes one HWC image (numpy or tensor, uint8 or float; what decode_image and the
packed format hold) and returns a CHW tensor (PyTorch's layout; CNTK needed a Transpose for that).
uint8 stays uint8 through Crop, Scale, Color, Intensity and HFlip (photometric results are rounded,
at most 0.5 level off); Mean returns float32. Randomness comes only from the ``rng`` argument, a
numpy Generator: ``sample_rng(seed, index, epoch)`` makes one per sample, so a result depends on
(seed, index, epoch) alone, whatever the number of DataLoader workers.

Modules: base (Transform, randomness, option parsing), geometry (Crop, Scale, HFlip, Transpose),
photometric (Mean, Intensity, Color; OpenCV XML); this one holds Pipeline and the config builders and
re-exports every transform, so ``from gearsight.cntk.transforms import Crop`` works as before.
"""
from __future__ import annotations

import os
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

# The config language is parsed in config.py (no image code there); re-exported so callers need one import.
from gearsight.cntk.config import find_pipelines, parse_config, pick_pipeline  # noqa: F401
from gearsight.cntk.transforms.base import (ImageLike, Range, Transform, _camel, as_chw, sample_rng,  # noqa: F401
                                            to_grayscale)
from gearsight.cntk.transforms.geometry import (CROP_TYPES, INTERPOLATIONS, JITTER_TYPES, SCALE_MODES, Crop,  # noqa: F401
                                                HFlip, Scale, Transpose)
from gearsight.cntk.transforms.photometric import (MEAN_LAYOUTS, Color, Intensity, Mean, read_mean_file,  # noqa: F401
                                                   read_opencv_matrix, scale_saturation)

TRANSFORM_TYPES: dict[str, type[Transform]] = {
    cls.cntk_type.lower(): cls for cls in (Crop, Scale, Mean, Color, Intensity, HFlip, Transpose)}


class Pipeline:
    """Transforms applied in order. ``copies`` is 10 with a MultiView10 crop (one per view), else 1."""

    def __init__(self, transforms: Sequence[Transform] = ()):
        self.transforms = list(transforms)
        bad = [t for t in self.transforms if not isinstance(t, Transform)]
        if bad:
            raise TypeError(f"Pipeline takes Transform objects, got {type(bad[0]).__name__}")
        self.copies = 10 if any(isinstance(t, Crop) and t.crop_type == "multiview10" for t in self.transforms) else 1

    def apply(self, img: torch.Tensor, rng: np.random.Generator, view: int = 0) -> torch.Tensor:
        for t in self.transforms:
            img = t.apply(img, rng, view)
        return img

    def __call__(self, image: ImageLike, rng: np.random.Generator | int | None = None, view: int = 0) -> torch.Tensor:
        """One HWC image (uint8 or float, numpy or tensor) -> CHW tensor."""
        return self.apply(as_chw(image), np.random.default_rng(rng), view)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"Pipeline({self.transforms!r})"

    def for_evaluation(self) -> "Pipeline":
        """The same geometry without the randomness, for validation when no val transforms are given:
        a random crop becomes a centre crop of its mid-range size (no flip, no aspect jitter); Color,
        Intensity and HFlip are dropped; a Scale with several interpolations keeps its first. Selecting
        the best epoch on randomly cropped val images measures the crops' luck as much as the model."""
        out = []
        for t in self.transforms:
            if isinstance(t, (Color, Intensity, HFlip)):
                continue
            if isinstance(t, Crop) and t.crop_type in ("randomside", "randomarea"):
                mid = lambda r: None if r is None else (r[0] + r[1]) / 2  # noqa: E731
                t = Crop(crop_type="center", side_ratio=mid(t.side_ratio), area_ratio=mid(t.area_ratio),
                         crop_size=t.crop_size and ":".join(map(str, t.crop_size)), hflip=False)
            elif isinstance(t, Scale) and len(t.interpolations) > 1:
                t = replace(t, interpolations=t.interpolations[0])
            out.append(t)
        return Pipeline(out)


def transform_batch(pipeline: Pipeline, images: np.ndarray | torch.Tensor, seed: int = 0, epoch: int = 0,
                    indices: Sequence[int] | None = None) -> torch.Tensor:
    """Apply ``pipeline`` to an NHWC batch (e.g. a packed ``images.npy`` slice) -> NCHW tensor.

    Image i draws from ``sample_rng(seed, indices[i], epoch)``: pass the images' dataset indices to
    get the same result as the map-file reader gives those samples.
    """
    indices = range(len(images)) if indices is None else indices
    if len(indices) != len(images):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")
    out = [pipeline(images[i], sample_rng(seed, int(idx), epoch)) for i, idx in enumerate(indices)]
    return stack_images(out)


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """CHW tensors -> NCHW; a clear error when a pipeline without Scale left them different sizes."""
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(f"images differ in size ({', '.join(map(str, sorted(shapes)[:3]))}); "
                         "add a Scale transform to batch them")
    return torch.stack(list(images))


def build_transform(spec: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Transform:
    """One ``{type = ..., key = value}`` record (CNTK camelCase or our snake_case keys) -> Transform."""
    spec = dict(spec)
    if "type" not in spec:
        raise ValueError(f"transform record has no 'type' key: {spec}")
    type_name = spec.pop("type")
    cls = TRANSFORM_TYPES.get(str(type_name).lower())
    if cls is None:
        known = ", ".join(c.cntk_type for c in TRANSFORM_TYPES.values())
        raise ValueError(f"unknown transform type {type_name!r} (key 'type'); known: {known}")
    params = [f for f in fields(cls) if f.init]
    lookup = {**{f.name: f.name for f in params}, **{_camel(f.name): f.name for f in params}}
    kwargs = {}
    for key, value in spec.items():
        if key not in lookup:
            known = ", ".join(_camel(f.name) for f in params) or "none"
            raise ValueError(f"{cls.cntk_type}: unknown key {key!r}; known keys: {known}")
        kwargs[lookup[key]] = value
    missing = [_camel(f.name) for f in params if f.default is MISSING and f.name not in kwargs]
    if missing:
        raise ValueError(f"{cls.cntk_type}: missing required key {missing[0]!r}")
    for name in cls.path_fields:
        if kwargs.get(name) is not None and base_dir is not None:
            kwargs[name] = Path(base_dir) / Path(str(kwargs[name]))
    return cls(**kwargs)


def transforms_from_config(config: str | os.PathLike | Sequence[Mapping | Transform] | Pipeline, *,
                           section: str | None = None, variables: Mapping[str, Any] | None = None,
                           base_dir: str | os.PathLike | None = None) -> Pipeline:
    """A Pipeline from CNTK config text (str), a config file (Path), or a list of dicts/Transforms.

    Text with several transform lists (a whole .cntk file) needs ``section``: a dotted-path part
    that picks one, e.g. "features2" or "Composite_Test". File names (meanFile, intensityFile) are
    relative to ``base_dir`` (default: the config file's folder, else the working directory);
    ``$ConfigDir$`` is the config file's folder unless ``variables`` says otherwise.
    """
    if isinstance(config, Pipeline):
        return config
    source = "<config>"
    if isinstance(config, os.PathLike):
        path = Path(config)
        source, base_dir = str(path), base_dir if base_dir is not None else path.parent
        variables = {"ConfigDir": str(path.parent), **(variables or {})}
        config = path.read_text(encoding="utf-8")
    if isinstance(config, str):
        name, specs = pick_pipeline(find_pipelines(config, variables, source), section, source)
        where = f"{source} {name or 'transforms'}"
    else:
        specs, where = list(config), "transforms"
    out = []
    for i, spec in enumerate(specs, start=1):
        if isinstance(spec, Transform):
            out.append(spec)
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}, transform {i}: expected a {{ type = ... }} record, got {spec!r}")
        try:
            out.append(build_transform(spec, base_dir))
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"{where}, transform {i}: {exc}") from None
    return Pipeline(out)
