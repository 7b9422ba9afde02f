"""Export a detector model file to ONNX, so the scoring service can run it without PyTorch.

The graph is torchvision's whole Faster R-CNN, preprocessing and postprocessing included: input
``image`` is one ``3 x H x W`` float32 RGB image in 0..1 of any size; outputs are ``boxes`` (N x 4,
xyxy in the input's pixels), ``labels`` (N, int64, 1-based class index) and ``scores`` (N). The
ModelSpec JSON travels in ``metadata_props`` (key ``gearsight``), written by gearsight.onnxfile as for
classifiers.

Exporter: the TorchScript-based one (``dynamo=False``), the path torchvision documents and tests
for its detection models (opset >= 11). Data-dependent control flow (NMS, top-k) is traced, so
``export_detector`` checks the ONNX outputs against eager PyTorch on an image of a second size.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from gearsight.files import atomic_write, file_sha256
from gearsight.onnxfile import cpu_session, write_metadata

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "labels", "scores")
OPSET = 17


def _probe_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth random image: blobs give the RPN something to propose (pure noise gives nothing)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(3, max(h // 32, 2), max(w // 32, 2), generator=g)
    return torch.nn.functional.interpolate(small[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def match_fraction(a: tuple, b: tuple, atol: float = 0.05) -> float:
    """Share of detections (boxes, labels, scores) of ``a`` that ``b`` also has, in any order.

    Order is not compared: boxes with equal scores (common in an untrained net) come out of NMS and
    top-k in whichever order the kernels give, and ONNX Runtime's differ from PyTorch's.
    """
    (boxes_a, labels_a, scores_a), (boxes_b, labels_b, scores_b) = a, b
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return float(len(boxes_a) == len(boxes_b))
    unused = np.ones(len(boxes_b), dtype=bool)
    found = 0
    for box, label, score in zip(boxes_a, labels_a, scores_a):
        same = (unused & (labels_b == label) & (np.abs(scores_b - score) <= 1e-4)
                & (np.abs(boxes_b - box).max(axis=1) <= atol))
        if same.any():
            unused[np.argmax(same)] = False
            found += 1
    return found / max(len(boxes_a), len(boxes_b))


def check_against_torch(model, onnx_path: str | os.PathLike, image: torch.Tensor, min_match: float = 0.97) -> int:
    """Run both on ``image``; raise unless they agree on ``min_match`` of the detections. Returns the count.

    Not 100%: when 100 boxes tie at the cut-off score, which of them are kept is arbitrary.
    """
    got = tuple(cpu_session(onnx_path).run(None, {INPUT_NAME: image.numpy()}))
    with torch.inference_mode():
        out = model([image])[0]
    want = tuple(out[k].numpy() for k in OUTPUT_NAMES)
    share = match_fraction(got, want)
    if share < min_match:
        raise RuntimeError(f"ONNX export disagrees with PyTorch: {share:.0%} of detections match "
                           f"({len(got[0])} vs {len(want[0])} boxes)")
    return len(got[0])


def export_detector(model_path: str | os.PathLike, out: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write the detector ``model_path`` (.safetensors) as ``out`` (.onnx), checked against PyTorch."""
    from gearsight.detect.predict import load_detector

    model, spec = load_detector(model_path)
    source_sha = file_sha256(model_path)
    size = spec.input_size

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer notices
            torch.onnx.export(
                model, ([_probe_image(size, size * 4 // 3, 0)],), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {1: "height", 2: "width"}, **{n: {0: "detections"} for n in OUTPUT_NAMES}},
            )
        write_metadata(tmp, spec, source_sha, f"gearsight {spec.arch} detector over {len(spec.classes)} classes")
        # A second size proves the resize inside the graph is not baked to the trace's shape.
        check_against_torch(model, tmp, _probe_image(size + 37, size * 2, 1))

    out = Path(out)
    atomic_write(out, write)
    return out
