"""gearsight: from folders of real photos to a CNN that is trained, measured, saved and served.

Pipeline, one folder a stage: image (decode, resize; torch-free) -> data (inputs, sources, pack,
transforms, loader) -> models -> train -> evaluate / predict -> export -> serve; detect holds the
object-detection counterpart (its recipe: detect.recipe), and cntk (CTF, map files, CNTK's transforms
and configs) reads what a CNTK user brings. Shared by all: modelfile (the model file, one loader),
onnxfile (ONNX metadata, torch-free), checkpoint (resume checkpoints), files (atomic writes, digests).
docs/ARCHITECTURE.md draws the data flow, README "Layout" maps the modules, and
tests/test_import_graph.py keeps the imports acyclic.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path):  # -> gearsight.predict.Classifier
    """Load a saved model file (``.safetensors``, no pickle) as a Classifier with ``.predict``."""
    from gearsight.predict import Classifier

    return Classifier.load(path)
