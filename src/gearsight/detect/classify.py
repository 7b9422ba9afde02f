"""COCO detection data as image-classification records, for the "same exercise on COCO" study.

Two ways to turn boxes into one label per picture:
- ``dominant``: the whole image, labelled by the category covering the most box area (the naive
  approach; many objects per image make the label arbitrary);
- ``crops``: one picture per object box, cut out and saved under ``crop_dir/<class>/``.
Crowd boxes are skipped in both; images without boxes (dominant) and boxes under ``min_side``
pixels (crops) are skipped too, and every skip is counted in one AnnotationWarning.

``coco_classification_rows`` also assigns train/val/test **by photo**: all crops of one photo land
in one split. A split per crop (what ``gearsight pack`` does for a CSV without a split column) puts
the person crop of a photo in train and its neighbour's crop, same light and background, in test.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from gearsight.detect.coco import read_coco
from gearsight.detect.records import AnnotationWarning


class ClassificationRow(NamedTuple):
    path: Path  # the picture to classify: a whole photo, or one object cropped from it
    label: str
    split: str  # train / val / test, one per source photo
    source: Path  # the photo it comes from


def coco_to_classification_records(coco_json: str | Path, images_dir: str | Path | None = None,
                                   mode: str = "dominant", crop_dir: str | Path | None = None,
                                   min_side: int = 16) -> list[tuple[Path, str]]:
    """``(image path, class name)`` records from a COCO instances json (see the module docstring)."""
    return [(path, label) for path, label, _ in _records(coco_json, images_dir, mode, crop_dir, min_side)]


def coco_classification_rows(coco_json: str | Path, images_dir: str | Path | None = None,
                             mode: str = "dominant", crop_dir: str | Path | None = None, min_side: int = 16,
                             fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                             seed: int = 0) -> list[ClassificationRow]:
    """The records with a split each, assigned by source photo (see ``split_by_photo``)."""
    return split_by_photo(_records(coco_json, images_dir, mode, crop_dir, min_side), fractions, seed)


def split_by_photo(records: list[tuple[Path, str, Path]], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                   seed: int = 0) -> list[ClassificationRow]:
    """``(path, label, source photo)`` -> rows whose split is the photo's: photos shuffled (seeded,
    from sorted order) and cut where the running record count passes each fraction."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    per_photo: dict[Path, int] = {}
    for _, _, source in records:
        per_photo[source] = per_photo.get(source, 0) + 1
    photos = sorted(per_photo)
    random.Random(seed).shuffle(photos)
    split_of, done, total = {}, 0, len(records)
    for photo in photos:
        # by the middle of the photo's records, so one large photo does not push a split over its share
        at = (done + per_photo[photo] / 2) / max(total, 1)
        split_of[photo] = "train" if at < fractions[0] else "val" if at < fractions[0] + fractions[1] else "test"
        done += per_photo[photo]
    return [ClassificationRow(path, label, split_of[source], source) for path, label, source in records]


def _records(coco_json, images_dir, mode: str, crop_dir, min_side: int) -> list[tuple[Path, str, Path]]:
    if mode not in ("dominant", "crops"):
        raise ValueError(f"mode must be 'dominant' or 'crops', not {mode!r}")
    if mode == "crops" and crop_dir is None:
        raise ValueError("mode='crops' needs crop_dir, the folder the crops are written to")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)  # box fixes are reported by read_coco's issues
        data = read_coco(coco_json, images_dir)
    records: list[tuple[Path, str, Path]] = []
    skipped = 0
    for rec in data.records:
        keep = ~rec.iscrowd
        boxes, labels = rec.boxes[keep], rec.labels[keep]
        if mode == "dominant":
            if len(labels) == 0:
                skipped += 1
                continue
            area = np.bincount(labels, weights=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
            records.append((rec.image, data.classes[int(area.argmax())], rec.image))
            continue
        skipped += _write_crops(rec, boxes, labels, data.classes, Path(crop_dir), min_side, records)
    if skipped:
        what = "images without boxes" if mode == "dominant" else f"boxes under {min_side} px"
        warnings.warn(f"{coco_json}: skipped {skipped} {what}", AnnotationWarning, stacklevel=3)
    return records


def _write_crops(rec, boxes, labels, classes, crop_dir: Path, min_side: int, records: list) -> int:
    skipped = 0
    with Image.open(rec.image) as im:
        im = im.convert("RGB")
        for k, (box, label) in enumerate(zip(boxes, labels)):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            if min(x2 - x1, y2 - y1) < min_side:
                skipped += 1
                continue
            out = crop_dir / classes[label] / f"{rec.image_id}_{k}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            im.crop((x1, y1, x2, y2)).save(out, quality=95)
            records.append((out, classes[label], rec.image))
    return skipped


def coco_obstacles(coco_json: str | Path, images_dir: str | Path | None = None, min_side: int = 16,
                   cover: float = 0.25) -> dict:
    """Why COCO goes badly as classification, measured on the json (crowd boxes left out, as above).

    Per labelled photo: ``categories`` (distinct categories), ``objects`` (boxes) and ``dominant_share``
    (share of its boxes the dominant-area label names: what (a) keeps). Per box: ``side`` (sqrt of
    the box area, px), ``min_side`` (shorter box side, px), ``cropped`` (the box becomes a crop: its
    rounded shorter side is ``min_side`` or more, the rule of mode="crops") and ``covered`` (the largest share of its area another box of the photo covers: a crop with
    ``covered >= cover`` shows a good part of another object). ``crops_per_class`` counts the boxes
    that become crops, ``dominant_per_class`` the photos each label dominates; both sorted, largest first.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        data = read_coco(coco_json, images_dir)
    categories, objects, shares, sides, short, covered, cropped = [], [], [], [], [], [], []
    crops = np.zeros(len(data.classes), np.int64)
    dominant = np.zeros(len(data.classes), np.int64)
    for rec in data.records:
        boxes, labels = rec.boxes[~rec.iscrowd], rec.labels[~rec.iscrowd]
        if len(labels) == 0:
            continue
        wh = boxes[:, 2:] - boxes[:, :2]
        area = wh.prod(1)
        top = int(np.bincount(labels, weights=area).argmax())
        categories.append(len(set(labels.tolist())))
        objects.append(len(labels))
        shares.append(float(np.mean(labels == top)))
        dominant[top] += 1
        # intersection of every pair of boxes, over the first box's area
        lo, hi = np.maximum(boxes[:, None, :2], boxes[None, :, :2]), np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        inter = np.clip(hi - lo, 0, None).prod(2)
        np.fill_diagonal(inter, 0)
        covered.extend((inter.max(1) / np.maximum(area, 1e-9)).tolist())
        sides.extend(np.sqrt(area).tolist())
        short.extend(wh.min(1).tolist())
        # the crop rule of _write_crops: rounded corners, shorter side >= min_side
        r = np.round(boxes)
        is_crop = (r[:, 2:] - r[:, :2]).min(1) >= min_side
        cropped.extend(is_crop.tolist())
        np.add.at(crops, labels[is_crop], 1)
    order = lambda counts: dict(sorted(((data.classes[i], int(c)) for i, c in enumerate(counts) if c),  # noqa: E731
                                       key=lambda kv: (-kv[1], kv[0])))
    return {"photos": len(objects), "categories": np.asarray(categories), "objects": np.asarray(objects),
            "dominant_share": np.asarray(shares), "side": np.asarray(sides), "min_side": np.asarray(short),
            "covered": np.asarray(covered),
            "cropped": np.asarray(cropped, bool), "cover": cover, "min_crop_side": min_side,
            "crops_per_class": order(crops), "dominant_per_class": order(dominant)}
