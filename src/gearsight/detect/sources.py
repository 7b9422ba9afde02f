"""Open a detection dataset from a path, whichever format it is in."""
from __future__ import annotations

from pathlib import Path

from gearsight.detect.coco import read_coco
from gearsight.detect.records import DetectionData
from gearsight.detect.voc import find_voc_root, read_voc


def find_coco_json(path: Path) -> Path | None:
    """``path`` if it is a json file, or the only ``annotations/instances_*.json`` under a folder."""
    if path.is_file() and path.suffix == ".json":
        return path
    found = sorted(path.glob("annotations/instances_*.json")) if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def load_detection_data(path: str | Path, split: str | None = None, *, images: str | Path | None = None,
                        val_fraction: float = 0.2, classes: list[str] | None = None,
                        strict: bool = False) -> DetectionData:
    """A VOC folder (``split`` = an ImageSets/Main file) or a COCO json / COCO folder.

    COCO splits are "all", or "train"/"val" made by a stable hash holdout of ``val_fraction``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"detection data not found: {path}")
    if find_voc_root(path) is not None:
        return read_voc(path, split, classes=classes, strict=strict)
    coco_json = find_coco_json(path)
    if coco_json is not None:
        data = read_coco(coco_json, images, split, val_fraction=val_fraction, strict=strict)
        if classes and classes != data.classes:
            raise ValueError(f"{coco_json}: categories {data.classes} differ from the model's {classes}")
        return data
    raise ValueError(f"{path}: neither a Pascal VOC folder (Annotations/) nor a COCO json "
                     "(a .json file, or a folder with annotations/instances_*.json)")
