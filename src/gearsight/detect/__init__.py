"""Object detection: COCO/VOC sources, Faster R-CNN factory, training, COCO evaluation, prediction.

Pipeline: sources (voc, coco -> records) -> transforms (box-aware v2 augmentation) -> model
(torchvision Faster R-CNN) -> recipe (the training configuration from the data: anchors, the BCCD
recipe) -> train -> evaluate (pycocotools) / predict (Detector) -> report, draw -> export (ONNX).
Model file and resume checkpoints are the classifier's (gearsight.modelfile, gearsight.checkpoint).
Attributes load lazily so ``import gearsight.detect`` does not pull in torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Detector": "gearsight.detect.predict",
    "load_detector": "gearsight.detect.predict",
    "DetectionRecord": "gearsight.detect.records",
    "DetectionData": "gearsight.detect.records",
    "AnnotationWarning": "gearsight.detect.records",
    "load_detection_data": "gearsight.detect.sources",
    "read_voc": "gearsight.detect.voc",
    "read_coco": "gearsight.detect.coco",
    "write_coco": "gearsight.detect.coco",
    "to_coco": "gearsight.detect.coco",
    "coco_to_classification_records": "gearsight.detect.classify",
    "create_detector": "gearsight.detect.model",
    "evaluate_detector": "gearsight.detect.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gearsight.detect' has no attribute {name!r}")
