"""The served model: an ONNX Runtime session plus the ModelSpec read from the file's metadata.

No torch here: the serving process (and the slim container) runs on onnxruntime + numpy only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gearsight.modelfile import ModelSpec
from gearsight.onnxfile import read_metadata


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


def _session(path: Path, threads: int):
    import onnxruntime as ort

    ort.disable_telemetry_events()  # a scoring service phones nobody (and has no home dir to write to)
    opts = ort.SessionOptions()
    # On a small box requests already run in parallel (decode in threads, batches in ORT); one
    # intra-op thread per run avoids oversubscription under load (ORT alone on an idle box is faster
    # with 2: bench/bench_serve_parts.py; under concurrent requests the decode threads want the cores).
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def open_onnx(path: str | os.PathLike, threads: int, export_command: str):
    """(session, ModelSpec, version) of a gearsight ONNX file; errors name the file and the fix.

    The version names the weights: the source .safetensors digest when export recorded it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        session = _session(path, threads)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own protobuf/graph errors
        raise ValueError(f"{path}: not an ONNX model onnxruntime can load ({type(exc).__name__}); serve an exported "
                         f".onnx (`{export_command}`) or a .safetensors model file") from None
    spec, version = read_metadata(session.get_modelmeta().custom_metadata_map, path, export_command)
    return session, spec, version


class OnnxModel:
    """Softmax probabilities from an exported gearsight ONNX file."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, threads: int = 1):
        self.session, self.spec, self.version = open_onnx(path, threads, "gearsight export")
        self.name = name or Path(path).stem
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.classes = list(self.spec.classes)
        self.input_shape = (3, self.spec.input_size, self.spec.input_size)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``N x 3 x S x S`` float32 -> ``N x num_classes`` softmax probabilities."""
        logits = self.session.run([self.output_name], {self.input_name: batch})[0]
        # An input of huge finite values can overflow to +-Inf logits: clip them so softmax stays a
        # number (NaN stays NaN; Engine.score refuses it rather than send NaN in JSON).
        fmax = np.finfo(logits.dtype).max
        np.clip(logits, -fmax, fmax, out=logits)
        logits = logits - logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        """The ``k`` most probable classes of one probability row, most probable first."""
        order = np.argsort(-probs, kind="stable")[:k]
        return [Prediction(self.classes[i], round(float(probs[i]), 6)) for i in order]
