"""Detection sources: VOC and COCO readers on real files, VOC -> COCO export, bad annotation files.

Also home of ``make_voc``/``make_coco``, the tiny on-disk datasets the other test_detect files use.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_dataset
from gearsight.detect.coco import read_coco, to_coco, write_coco
from gearsight.detect.records import AnnotationWarning
from gearsight.detect.sources import load_detection_data
from gearsight.detect.voc import read_voc

CLASSES = ["cat", "dog"]
COLOURS = {"cat": (220, 40, 40), "dog": (40, 40, 220)}


def _voc_xml(name: str, width: int, height: int, objects: list[tuple[str, list[float]]]) -> str:
    objs = "".join(
        f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for c, b in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def make_voc(root: Path, n: int = 6, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """A VOC folder of ``n`` images, each with a red 'cat' and a blue 'dog' square on grey; split files
    train (first half), val and test (the rest)."""
    rng = np.random.default_rng(seed)
    w, h = size
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        image = np.full((h, w, 3), 128, np.uint8)
        objects = []
        for cls, side in (("cat", 40), ("dog", 28)):
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            image[y:y + side, x:x + side] = COLOURS[cls]
            objects.append((cls, [x, y, x + side, y + side]))
        stem = f"img_{i:03d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", w, h, objects))
        ids.append(stem)
    half = max(1, n // 2)
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids[:half]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(ids[half:]) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(ids[half:]) + "\n")
    return root


def coco128_subset(tmp: Path, n: int) -> tuple[Path, Path]:
    """The first ``n`` coco128 images as a COCO json in ``tmp`` (same ids), and the real image folder."""
    src = require_dataset("coco128")
    data = json.loads((src / "annotations/instances_train2017.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp / "subset.json"
    path.write_text(json.dumps(data))
    return path, src / "train2017"


def test_voc_reader_reads_boxes_labels_and_splits(tmp_path):
    root = make_voc(tmp_path / "voc", n=6)
    data = read_voc(root, "train")
    assert data.classes == CLASSES
    assert [r.image.name for r in data.records] == ["img_000.jpg", "img_001.jpg", "img_002.jpg"]
    rec = data.records[0]
    assert (rec.width, rec.height) == (160, 120)
    assert rec.labels.tolist() == [0, 1]
    assert rec.boxes.shape == (2, 4) and np.all(rec.boxes[:, 2:] > rec.boxes[:, :2])
    assert len(read_voc(root, "all").records) == 6
    with pytest.raises(FileNotFoundError, match="split file not found: .*nope.txt .*available: test, train, val"):
        read_voc(root, "nope")


def test_voc_to_coco_round_trip_keeps_every_box(tmp_path):
    root = make_voc(tmp_path / "voc", n=5)
    voc = read_voc(root)
    out = write_coco(voc, tmp_path / "out.json")
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == CLASSES
    assert len(coco["images"]) == 5 and len(coco["annotations"]) == 10
    first = voc.records[0]
    ann = next(a for a in coco["annotations"] if a["image_id"] == first.image_id)
    x1, y1, x2, y2 = first.boxes[0]
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["area"] == (x2 - x1) * (y2 - y1)
    back = read_coco(out, root / "JPEGImages")
    for a, b in zip(voc.records, back.records):
        assert a.image == b.image and a.image_id == b.image_id
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_cli_convert_writes_coco_json(tmp_path):
    from conftest import run_cli

    root = make_voc(tmp_path / "voc", n=4)
    proc = run_cli("detect", "convert", root, "--split", "train", "--out", tmp_path / "train.json")
    assert "2 images, 4 boxes, 2 categories" in proc.stdout
    coco = json.loads((tmp_path / "train.json").read_text())
    assert len(coco["images"]) == 2


def test_missing_image_is_an_error_naming_both_files(tmp_path):
    root = make_voc(tmp_path / "voc", n=4)
    (root / "JPEGImages/img_001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"img_001\.xml: image file not found: .*img_001\.jpg"):
        read_voc(root, "train")


def test_box_outside_image_is_clipped_with_a_warning_or_refused_when_strict(tmp_path):
    root = make_voc(tmp_path / "voc", n=2)
    xml = root / "Annotations/img_000.xml"
    xml.write_text(_voc_xml("img_000.jpg", 160, 120, [("cat", [-10, 5, 50, 40]), ("dog", [150, 100, 200, 130])]))
    with pytest.warns(AnnotationWarning, match="extends outside the 160x120 image; clipped"):
        data = read_voc(root, "all")
    np.testing.assert_array_equal(data.records[0].boxes, [[0, 5, 50, 40], [150, 100, 160, 120]])
    assert len(data.issues) == 2 and all("img_000.xml" in i for i in data.issues)
    with pytest.raises(ValueError, match=r"img_000\.xml: box \[-10, 5, 50, 40\] extends outside"):
        read_voc(root, "all", strict=True)


def test_degenerate_and_far_outside_boxes_are_dropped_with_a_warning(tmp_path):
    root = make_voc(tmp_path / "voc", n=2)
    (root / "Annotations/img_000.xml").write_text(_voc_xml(
        "img_000.jpg", 160, 120, [("cat", [10, 10, 10, 10]), ("dog", [200, 10, 220, 30]), ("dog", [1, 2, 30, 40])]))
    with pytest.warns(AnnotationWarning) as caught:
        data = read_voc(root, "all")
    assert "has no area; dropped" in data.issues[0] and "lies outside the 160x120 image; dropped" in data.issues[1]
    assert data.records[0].labels.tolist() == [1]
    assert "2 annotation issue(s)" in str(caught[0].message)


def test_empty_annotations_are_reported(tmp_path):
    root = make_voc(tmp_path / "voc", n=3)
    (root / "Annotations/img_000.xml").write_text(_voc_xml("img_000.jpg", 160, 120, []))
    with pytest.warns(AnnotationWarning, match=r"img_000\.xml: no boxes; kept as a background image"):
        data = read_voc(root, "all")
    assert len(data.records[0].boxes) == 0
    (root / "Annotations/img_001.xml").write_text("")
    with pytest.raises(ValueError, match=r"img_001\.xml: empty annotation file \(0 bytes\)"):
        read_voc(root, "all")


def test_malformed_xml_names_the_file_and_line(tmp_path):
    root = make_voc(tmp_path / "voc", n=2)
    (root / "Annotations/img_001.xml").write_text("<annotation>\n<object><name>cat</name>\n</annotation>")
    with pytest.raises(ValueError, match=r"img_001\.xml: malformed xml at line 3"):
        read_voc(root)
    (root / "Annotations/img_001.xml").write_text(_voc_xml("img_001.jpg", 160, 120, [("cat", [1, 2, "x", 9])]))
    with pytest.raises(ValueError, match=r"img_001\.xml: object 1: <xmax> is not a number: 'x'"):
        read_voc(root)


def test_coco_reader_reports_bad_annotations(tmp_path):
    root = make_voc(tmp_path / "voc", n=2)
    coco = to_coco(read_voc(root))
    coco["annotations"][0]["bbox"] = [150.0, 100.0, 30.0, 30.0]  # runs past 160x120
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    with pytest.warns(AnnotationWarning, match=r"c\.json: image 1 \(img_000\.jpg\): box .* clipped"):
        read_coco(path, root / "JPEGImages")
    coco["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"c\.json: annotation 1: category_id 99 is not in 'categories'"):
        read_coco(path, root / "JPEGImages")
    coco["annotations"][0]["category_id"] = 1
    path.write_text(json.dumps(coco))
    with pytest.raises(FileNotFoundError, match=r"c\.json: image 1 \(img_000\.jpg\): image file not found"):
        read_coco(path, tmp_path)
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"c\.json: malformed json at line 1"):
        read_coco(path)


def test_bccd_official_split_reads_with_its_two_point_boxes_reported():
    root = require_dataset("bccd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        splits = {s: load_detection_data(root, s) for s in ("train", "val", "test")}
    assert {s: len(d.records) for s, d in splits.items()} == {"train": 205, "val": 87, "test": 72}
    assert splits["train"].classes == ["Platelets", "RBC", "WBC"]
    issues = [i for d in splits.values() for i in d.issues]
    # BCCD ships two zero-area "boxes" (00338, 00343): dropped, and said so.
    assert len(issues) == 2 and all("has no area; dropped" in i for i in issues)


def test_coco128_reads_and_holdout_split_is_stable():
    root = require_dataset("coco128")
    everything = load_detection_data(root)
    assert len(everything.records) == 128 and len(everything.classes) == 80
    assert sum(len(r.boxes) for r in everything.records) == 939
    train, val = load_detection_data(root, "train"), load_detection_data(root, "val")
    assert len(train.records) + len(val.records) == 128 and 15 <= len(val.records) <= 40
    assert not {r.image_id for r in train.records} & {r.image_id for r in val.records}
