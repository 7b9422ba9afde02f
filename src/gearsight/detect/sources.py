"""Open a detection dataset from a path, whichever format it is in."""
from __future__ import annotations

from pathlib import Path

from gearsight.data.inputs import detection_input, find_coco_json  # noqa: F401  (find_coco_json: re-exported)
from gearsight.detect.coco import read_coco
from gearsight.detect.records import DetectionData
from gearsight.detect.voc import read_voc


def load_detection_data(path: str | Path, split: str | None = None, *, images: str | Path | None = None,
                        val_fraction: float = 0.2, classes: list[str] | None = None,
                        strict: bool = False) -> DetectionData:
    """A VOC folder (``split`` = an ImageSets/Main file) or a COCO json / COCO folder (which one:
    data/inputs.detection_input).

    COCO splits are "all", or "train"/"val" made by a stable hash holdout of ``val_fraction``.
    """
    kind, found = detection_input(path)
    if kind == "voc":
        return read_voc(path, split, classes=classes, strict=strict)
    data = read_coco(found, images, split, val_fraction=val_fraction, strict=strict)
    if classes and classes != data.classes:
        raise ValueError(f"{found}: categories {data.classes} differ from the model's {classes}")
    return data
