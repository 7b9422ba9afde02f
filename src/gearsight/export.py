"""Export a saved model to ONNX (or TorchScript) so it can be served without PyTorch.

The ONNX file carries the model's ``ModelSpec`` JSON in its ``metadata_props`` under the key
``gearsight`` (the same JSON the .safetensors header holds; gearsight.onnxfile writes and reads it),
so the .onnx file alone is enough to serve: classes, input size, resize mode, pad fill and mean/std
travel with the weights.

Exporter choice (torch 2.13): ``dynamo=True``, the default, needs ``onnxscript``, which is not a
dependency here; the TorchScript-based exporter (``dynamo=False``) handles these plain conv nets,
supports a dynamic batch axis through ``dynamic_axes`` and matches eager PyTorch to ~1e-7. It is
deprecated upstream, so ``export_onnx`` checks its own output against eager PyTorch every time.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from gearsight._moved import names as moved_names
from gearsight.files import atomic_write, file_sha256
from gearsight.modelfile import ModelSpec, load_model
from gearsight.onnxfile import cpu_session, write_metadata

INPUT_NAME = "input"  # N x 3 x S x S float32, normalised as in training
OUTPUT_NAME = "logits"  # N x num_classes float32 (softmax is applied by the server)
OPSET = 17
FORMATS = ("onnx", "torchscript")

# Moved to gearsight.onnxfile (torch-free, shared with serve/); the old names warn for one release.
__getattr__ = moved_names(__name__, {"SPEC_KEY": "gearsight.onnxfile.SPEC_KEY",
                                     "add_metadata": "gearsight.onnxfile.write_metadata",
                                     "onnx_session": "gearsight.onnxfile.cpu_session"})


def _example_input(spec: ModelSpec, batch: int = 2) -> torch.Tensor:
    # Batch 2, not 1: a batch-1 trace can bake size-1 shapes into reshape nodes.
    return torch.randn(batch, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write ``model_path`` (.safetensors) as ONNX with a dynamic batch axis and the spec in metadata."""
    model, spec = load_model(model_path)
    source_sha = file_sha256(model_path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # The deprecation notice for the TorchScript exporter: see the module docstring.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (_example_input(spec),), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        write_metadata(tmp, spec, source_sha, f"gearsight {spec.arch} classifier over {len(spec.classes)} classes")

    atomic_write(out, write)  # readable by a server user: atomic_write applies the umask
    max_diff = compare_onnx(model, out, _example_input(spec, batch=3).numpy())
    if max_diff > 1e-4:
        raise ValueError(f"{out}: the exported model differs from PyTorch by {max_diff:.2e} (> 1e-4)")
    return Path(out)


def export_torchscript(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a traced TorchScript module; the spec JSON rides along as the extra file ``gearsight.json``."""
    model, spec = load_model(model_path)
    with torch.no_grad():
        traced = torch.jit.trace(model, (_example_input(spec),))
    atomic_write(out, lambda tmp: torch.jit.save(traced, tmp, _extra_files={"gearsight.json": spec.to_json()}))
    return Path(out)


def export_model(model_path: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx") -> Path:
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    if fmt == "onnx":
        return export_onnx(model_path, out)
    if fmt == "torchscript":
        return export_torchscript(model_path, out)
    raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")


def compare_onnx(model: torch.nn.Module, onnx_path: str | os.PathLike, batch: np.ndarray) -> float:
    """Largest absolute difference between eager PyTorch and ONNX Runtime logits on ``batch``."""
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = cpu_session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return float(np.abs(expected - got).max())
