"""The COCO-as-classification exercise splits by photo: no photo gives crops to two splits, through
``gearsight pack`` too (its split column is kept, not redrawn per crop)."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_dataset, run_cli
from gearsight.data.pack import PackedDataset
from gearsight.detect.classify import coco_classification_rows, split_by_photo

CATEGORIES = [{"id": 1, "name": "cup"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "kite"}]


def make_coco(root: Path, n_photos: int = 30, seed: int = 0) -> Path:
    """``n_photos`` 96x80 JPEGs with 1-6 coloured boxes each (one crowd box), and their instances json."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n_photos):
        pixels = rng.integers(90, 160, (80, 96, 3), dtype=np.uint8)
        for k in range(int(rng.integers(1, 7))):
            w, h = int(rng.integers(18, 40)), int(rng.integers(18, 40))
            x, y = int(rng.integers(0, 96 - w)), int(rng.integers(0, 80 - h))
            cat = CATEGORIES[int(rng.integers(0, 3))]
            pixels[y:y + h, x:x + w] = (cat["id"] * 30, 255 - cat["id"] * 30, 60)
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": cat["id"],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(k == 5)})
        name = f"{100 + i:012d}.jpg"
        Image.fromarray(pixels).save(root / "images" / name, quality=92)
        images.append({"id": 100 + i, "file_name": name, "width": 96, "height": 80})
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def splits_per_photo(rows) -> dict[Path, set[str]]:
    seen: dict[Path, set[str]] = defaultdict(set)
    for row in rows:
        seen[row.source].add(row.split)
    return seen


def test_crops_of_one_photo_share_a_split_through_pack(tmp_path):
    coco = make_coco(tmp_path / "coco")
    rows = coco_classification_rows(coco, tmp_path / "coco" / "images", mode="crops", crop_dir=tmp_path / "crops")
    assert len(rows) > 60 and {r.label for r in rows} == {"cup", "dog", "kite"}
    assert all(len(s) == 1 for s in splits_per_photo(rows).values())
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "val", "test")}
    assert abs(counts["train"] / len(rows) - 0.7) < 0.1 and counts["val"] > 0 and counts["test"] > 0, counts
    # Packing keeps the split column: each packed split's files come from photos of that split only.
    table = tmp_path / "crops.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *[(r.path, r.label, r.split) for r in rows]])
    run_cli("pack", table, tmp_path / "packed", "--size", "24", "--quiet")
    ds = PackedDataset(tmp_path / "packed")
    source = {str(Path(r.path).resolve()): r.source for r in rows}
    photos = {s: {source[p] for p in ds.paths(s)} for s in ("train", "val", "test")}
    assert sum(len(ds.paths(s)) for s in photos) == len(rows)
    assert not (photos["train"] & photos["test"]) and not (photos["train"] & photos["val"]) and not (photos["val"] & photos["test"])


def test_split_by_photo_is_seeded_and_checks_fractions():
    records = [(Path(f"c{i}_{k}.jpg"), "x", Path(f"p{i}.jpg")) for i in range(40) for k in range(i % 4 + 1)]
    assert split_by_photo(records, seed=1) == split_by_photo(list(records), seed=1)
    assert split_by_photo(records, seed=1) != split_by_photo(records, seed=2)
    assert [r.split for r in split_by_photo(records, (1.0, 0.0, 0.0))] == ["train"] * len(records)
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_photo(records, (0.7, 0.2, 0.2))


def test_coco128_crops_split_by_photo(tmp_path):
    coco = require_dataset("coco128")
    rows = coco_classification_rows(coco / "annotations" / "instances_train2017.json", coco / "train2017",
                                    mode="crops", crop_dir=tmp_path / "crops")
    assert len(rows) > 500
    per_photo = splits_per_photo(rows)
    assert all(len(s) == 1 for s in per_photo.values())
    assert {s for splits in per_photo.values() for s in splits} == {"train", "val", "test"}


def test_coco_obstacles_measures_labels_sizes_and_overlaps(tmp_path):
    from gearsight.detect.classify import coco_obstacles

    (tmp_path / "images").mkdir()
    images = []
    for i in (1, 2, 3):
        Image.fromarray(np.full((80, 96, 3), 120, np.uint8)).save(tmp_path / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 96, "height": 80})
    boxes = [(1, 1, [0, 0, 20, 20], 0), (1, 1, [10, 0, 20, 20], 0), (1, 3, [50, 50, 10, 8], 0),  # photo 1
             (2, 3, [0, 0, 50, 50], 1),  # photo 2: one crowd box, so no labelled object
             (3, 3, [5, 5, 40, 40], 0)]  # photo 3: one dog
    annotations = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
                   for k, (i, c, b, crowd) in enumerate(boxes, 1)]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]}))
    why = coco_obstacles(path, tmp_path / "images", min_side=16, cover=0.25)
    assert why["photos"] == 2
    assert why["categories"].tolist() == [2, 1] and why["objects"].tolist() == [3, 1]
    np.testing.assert_allclose(why["dominant_share"], [2 / 3, 1])  # cats cover 800 px², the dog 80
    np.testing.assert_allclose(why["side"], [20, 20, np.sqrt(80), 40])
    np.testing.assert_allclose(why["covered"], [0.5, 0.5, 0, 0])  # the two cats share half their area
    assert why["cropped"].tolist() == [True, True, False, True]  # the 10x8 dog is under 16 px
    assert why["crops_per_class"] == {"cat": 2, "dog": 1} and why["dominant_per_class"] == {"cat": 1, "dog": 1}
