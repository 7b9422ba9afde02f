"""Pascal VOC reader: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/<split>.txt``.

Class names come from every xml in the folder (sorted), so train, val and test share one label map
even when a split lacks a class. The standard library parser is used (expat refuses entity
expansion attacks since 2.4.1); the files are small and flat.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from gearsight.data.inputs import find_voc_root
from gearsight.detect.records import DetectionData, DetectionRecord, IssueLog, check_boxes, require_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is not a number: {text!r}") from None


def _parse(xml_path: Path) -> ET.Element:
    if xml_path.stat().st_size == 0:
        raise ValueError(f"{xml_path}: empty annotation file (0 bytes)")
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise ValueError(f"{xml_path}: malformed xml at line {line}, column {col} ({exc})") from None


def _image_path(root: Path, xml_path: Path, ann: ET.Element) -> Path:
    name = (ann.findtext("filename") or "").strip()
    if name:
        return root / "JPEGImages" / name
    for suffix in IMAGE_SUFFIXES:  # no <filename>: the xml's stem with a usual image suffix
        if (root / "JPEGImages" / (xml_path.stem + suffix)).is_file():
            return root / "JPEGImages" / (xml_path.stem + suffix)
    return root / "JPEGImages" / (xml_path.stem + ".jpg")


def _image_size(ann: ET.Element, image: Path, where: str) -> tuple[int, int]:
    size = ann.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        w, h = int(_number(size, "width", where)), int(_number(size, "height", where))
        if w > 0 and h > 0:
            return w, h
    from PIL import Image  # no usable <size>: read it from the image header (no pixel decoding)

    with Image.open(image) as im:
        return im.size


def _objects(ann: ET.Element, where: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(ann.findall("object"), 1):
        at = f"{where}: object {k}"
        names.append(_text(obj, "name", at))
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ValueError(f"{at}: missing <bndbox>")
        boxes.append([_number(bnd, t, at) for t in ("xmin", "ymin", "xmax", "ymax")])
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return names, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(difficult, bool)


def read_split_ids(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
        raise FileNotFoundError(f"split file not found: {split_file} (available: {', '.join(have) or 'none'})")
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def read_voc(path: str | Path, split: str | None = None, *, classes: list[str] | None = None,
             strict: bool = False) -> DetectionData:
    """Read a VOC folder; ``split`` names ``ImageSets/Main/<split>.txt`` (None or "all": every xml)."""
    root = find_voc_root(path)
    if root is None:
        raise FileNotFoundError(f"{path}: not a Pascal VOC folder (no Annotations/ inside)")
    xmls = sorted((root / "Annotations").glob("*.xml"))
    if not xmls:
        raise ValueError(f"{root / 'Annotations'}: no .xml files")
    parsed = {p.stem: (p, _parse(p)) for p in xmls}
    ids = list(parsed) if split in (None, "all") else read_split_ids(root, split)
    missing = [i for i in ids if i not in parsed]
    if missing:
        raise FileNotFoundError(f"{root}/ImageSets/Main/{split}.txt lists {len(missing)} id(s) with no "
                                f"Annotations/<id>.xml, e.g. {missing[0]}")
    objects = {stem: _objects(ann, str(p)) for stem, (p, ann) in parsed.items()}
    classes = classes or sorted({n for names, _, _ in objects.values() for n in names})
    index = {c: i for i, c in enumerate(classes)}
    log = IssueLog(strict)
    position = {stem: n for n, stem in enumerate(parsed, 1)}  # a stable image id for COCO export
    records = []
    for stem in ids:
        xml_path, ann = parsed[stem]
        where = str(xml_path)
        image = _image_path(root, xml_path, ann)
        require_image(image, where)
        width, height = _image_size(ann, image, where)
        names, boxes, difficult = objects[stem]
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise ValueError(f"{where}: class {unknown[0]!r} is not one of {classes}")
        keep = check_boxes(boxes, width, height, where, log)
        if len(keep) == 0:
            log.warn(f"{where}: no boxes; kept as a background image")
        labels = np.asarray([index[n] for n in names], np.int64).reshape(-1)
        records.append(DetectionRecord(image, width, height, boxes[keep], labels[keep],
                                       image_id=position[stem], iscrowd=difficult[keep]))
    log.emit()
    return DetectionData(records, list(classes), issues=log.issues)
