"""COCO instances json: reader, writer (any DetectionData, e.g. VOC -> COCO), and classification records.

Category names keep the json's id order, and the json's own image/category ids are kept, so
detections written back in COCO form evaluate against the original file unchanged.
A json with one image list and no split (coco128) is split by a hash of each file name: stable
across runs and machines, and independent of the order of the json.
"""
from __future__ import annotations

import json
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gearsight.detect.records import DetectionData, DetectionRecord, IssueLog, check_boxes, require_image

HOLDOUT_SPLITS = ("all", "train", "val")


def default_images_dir(json_path: Path) -> Path:
    """COCO layout: ``annotations/instances_train2017.json`` -> ``train2017/`` beside ``annotations/``."""
    stem = json_path.stem.split("_", 1)[-1]
    guess = json_path.parent.parent / stem
    return guess if guess.is_dir() else json_path.parent


def in_holdout(file_name: str, fraction: float) -> bool:
    return zlib.crc32(file_name.encode()) % 10_000 < fraction * 10_000


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"COCO json not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed json at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: no {key!r} list (not a COCO instances file)")
    return data


def _image_size(entry: dict, image: Path) -> tuple[int, int]:
    if entry.get("width") and entry.get("height"):
        return int(entry["width"]), int(entry["height"])
    from PIL import Image

    with Image.open(image) as im:
        return im.size


def _group_annotations(data: dict, path: Path, cat_index: dict[int, int]) -> dict[int, list[dict]]:
    image_ids = {im["id"] for im in data["images"]}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {ann.get('id', f'#{k}')}"
        if ann.get("image_id") not in image_ids:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in cat_index:
            raise ValueError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise ValueError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        by_image[ann["image_id"]].append(ann)
    return by_image


def _record(entry: dict, anns: list[dict], images_dir: Path, path: Path, cat_index: dict[int, int],
            log: IssueLog) -> DetectionRecord:
    where = f"{path}: image {entry['id']} ({entry.get('file_name')})"
    image = images_dir / entry["file_name"]
    require_image(image, where)
    width, height = _image_size(entry, image)
    xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    keep = check_boxes(boxes, width, height, where, log)
    if len(keep) == 0:
        log.warn(f"{where}: no boxes; kept as a background image")
    labels = np.asarray([cat_index[a["category_id"]] for a in anns], np.int64)
    crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)
    areas = np.asarray([float(a.get("area") or w * h) for a, (_, _, w, h) in zip(anns, xywh)], np.float64)
    return DetectionRecord(image, width, height, boxes[keep], labels[keep], image_id=int(entry["id"]),
                           iscrowd=crowd[keep], areas=areas[keep])


def read_coco(json_path: str | Path, images_dir: str | Path | None = None, split: str | None = None, *,
              val_fraction: float = 0.2, strict: bool = False) -> DetectionData:
    """Read a COCO instances json; ``split`` "train"/"val" is a hash holdout of ``val_fraction``."""
    path = Path(json_path)
    data = _load_json(path)
    split = split or "all"
    if split not in HOLDOUT_SPLITS:
        raise ValueError(f"{path}: a COCO json has splits {', '.join(HOLDOUT_SPLITS)}, not {split!r}")
    images_dir = Path(images_dir) if images_dir else default_images_dir(path)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    by_image = _group_annotations(data, path, cat_index)
    log = IssueLog(strict)
    records = []
    for entry in data["images"]:
        if split != "all" and in_holdout(entry["file_name"], val_fraction) != (split == "val"):
            continue
        records.append(_record(entry, by_image.get(entry["id"], []), images_dir, path, cat_index, log))
    log.emit()
    return DetectionData(records, [c["name"] for c in cats], [c["id"] for c in cats], log.issues)


def to_coco(data: DetectionData) -> dict[str, Any]:
    """DetectionData -> a COCO instances dict (boxes as [x, y, w, h]); ids are the records' own."""
    images, annotations = [], []
    for rec in data.records:
        images.append({"id": rec.image_id, "file_name": rec.image.name, "width": rec.width, "height": rec.height})
        for box, label, crowd, area in zip(rec.boxes, rec.labels, rec.iscrowd, rec.areas):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": rec.image_id, "category_id": data.category_ids[label],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(area), "iscrowd": int(crowd)})
    categories = [{"id": i, "name": n} for i, n in zip(data.category_ids, data.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(data: DetectionData, path: str | Path) -> Path:
    from gearsight.files import atomic_write

    text = json.dumps(to_coco(data))
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return Path(path)
