"""The one place that decides where a model runs: ``resolve_device`` turns a device name into a torch.device.

Names (the ``--device`` option of every command that runs a model, ``TrainConfig.device``):
- ``auto`` (default): the GPU when PyTorch sees one (``cuda:LOCAL_RANK`` under torchrun), else the CPU;
- ``cpu``;
- ``cuda``: the GPU, ``cuda:LOCAL_RANK`` under torchrun; an error, not a silent CPU run, without one;
- ``cuda:N``: that GPU.

Everything else (training, evaluation, Classifier, Detector, the NCCL all-reduce) takes the device
this returns, or the device its model already sits on; nothing else asks ``torch.cuda.is_available``.
torch is imported inside the functions so the CLI can register ``--device`` without importing it.
"""
from __future__ import annotations

import re

DEVICE_NAMES = "cpu, cuda, cuda:N or auto"
DEVICE_HELP = ("where the model runs: cpu, cuda, cuda:N or auto (default auto: the GPU when PyTorch sees "
               "one, else the CPU; under torchrun cuda:LOCAL_RANK)")
_NAME = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(name=None, local_rank: int = 0):
    """``name`` (a string, a torch.device or None = auto) -> torch.device, checked against this machine.

    Raises ValueError naming the ``--device`` option when the name is not one of cpu, cuda, cuda:N,
    auto, or asks for a GPU that PyTorch cannot use here.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    text = "auto" if name is None else str(name).strip().lower()
    match = _NAME.match(text)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"--device {name!r}: expected {DEVICE_NAMES}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if kind == "auto":
        kind = "cuda" if available else "cpu"
        if kind == "cpu":
            return torch.device("cpu")
    if not available:
        why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
               else "PyTorch sees no CUDA GPU (check the driver and CUDA_VISIBLE_DEVICES)")
        raise ValueError(f"--device {text}: CUDA is not available: {why}; use --device cpu or --device auto")
    ordinal = int(index) if index is not None else int(local_rank)
    count = torch.cuda.device_count()
    if ordinal >= count:
        raise ValueError(f"--device {text}: asks for GPU {ordinal}, but PyTorch sees {count} "
                         f"(cuda:0..cuda:{count - 1})")
    return torch.device("cuda", ordinal)


def device_option(value: str) -> str:
    """argparse ``type=`` for ``--device``: checks the name against this machine now (a clear error
    before any data is read), and keeps the string, so each torchrun process resolves its own GPU."""
    import argparse

    try:
        resolve_device(value)
    except ValueError as exc:  # argparse prefixes "argument --device: "
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--device ")) from None
    return value.strip().lower()


def add_device_option(parser, default: str | None = "auto") -> None:
    """Add ``--device`` to an argparse parser or argument group."""
    parser.add_argument("--device", type=device_option, default=default, metavar="{cpu,cuda,cuda:N,auto}",
                        help=DEVICE_HELP)


def model_device(model):
    """The device a module's parameters (or, failing those, buffers) live on; CPU for an empty module."""
    import torch

    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
