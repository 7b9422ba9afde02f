"""Where images come from -> a list of ``Record(path, label, split)``.

Supported: a class-folder tree (``root/<class>/<file>``), the same tree inside a tar, a CSV
``path,label[,split]`` (paths relative to the CSV), and a CNTK map file (``path<TAB>label``, label an
integer class index; parsed by gearsight.cntk.mapfile, the parser training uses). Which one a path
is, data/inputs.py decides. Records are sorted by path so every later step (packing, splitting) is
deterministic; a map file keeps its order.
"""
from __future__ import annotations

import csv
import hashlib
import random
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from gearsight.data import inputs
from gearsight.data.inputs import IMAGE_SUFFIXES  # noqa: F401  (cifar.py and callers import it from here)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    path: str  # absolute path of the image file (a map file's zip member: archive + NUL + member)
    label: str  # class name
    split: str | None = None  # "train" | "val" | "test", or None when the source has none
    data: bytes | None = field(default=None, repr=False, compare=False)  # the file's bytes when it has no path
                                                                         # of its own (a tar member: path is
                                                                         # "archive::member")


def from_folder(root: str | Path) -> list[Record]:
    """``root/<class>/<file>``: every image file one level below a class folder."""
    root = Path(root)
    records = [
        Record(str(p.resolve()), class_dir.name)
        for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        for p in sorted(class_dir.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not records:
        raise ValueError(f"{root}: no images found in class folders (expected {root}/<class>/<image>)")
    return records


def from_csv(csv_path: str | Path) -> list[Record]:
    """A CSV with header ``path,label[,split]``; paths are relative to the CSV's folder."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    records = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: header must have path,label[,split]; missing {sorted(missing)}")
        for lineno, row in enumerate(reader, start=2):
            path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            split = (row.get("split") or "").strip() or None
            if not path or not label:
                raise ValueError(f"{csv_path}, line {lineno}: empty path or label")
            if split is not None and split not in SPLITS:
                raise ValueError(f"{csv_path}, line {lineno}: split {split!r} is not one of {SPLITS}")
            records.append(Record(str((base / path).resolve()), label, split))
    if not records:
        raise ValueError(f"{csv_path}: no rows")
    return sorted(records, key=lambda r: r.path)


def from_map_file(map_path: str | Path) -> list[Record]:
    """CNTK map file, read by the one map-file parser (gearsight.cntk.mapfile), so ``pack`` accepts
    exactly what training from the map file accepts: ``[key<TAB>]path<TAB>label``, label an integer,
    ``...``-prefixed and other relative paths relative to the file, ``archive.zip@/member``,
    Windows backslashes, a byte-order mark. A zip member's ``path`` is archive + NUL + member
    (``mapfile.ZIP_SEP``; ``pack`` reads it from the archive)."""
    from gearsight.cntk.mapfile import read_map_file

    _, sources, labels, _ = read_map_file(map_path)
    return [Record(sources[i], str(int(labels[i]))) for i in range(len(labels))]  # map-file order is kept


def from_tar(tar_path: str | Path) -> list[Record]:
    """A tar (any compression) of class folders, ``[root/]<class>/<file>``: read in one pass, each
    image kept as bytes (``Record.data``; path ``archive::member``). The class is the first folder
    below the folders every image shares, as ``from_folder`` takes the first folder below ``root``."""
    tar_path = Path(tar_path)
    members: list[tuple[PurePosixPath, bytes]] = []
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if member.isfile() and name.suffix.lower() in IMAGE_SUFFIXES and not inputs.hidden(name):
                    members.append((name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{tar_path}: cannot read the tar archive ({exc})") from None
    members = [(name, data) for name, data in members if len(name.parts) > 1]  # as from_folder: none at the root
    folders = [name.parts[:-1] for name, _ in members]
    if not folders:
        raise ValueError(f"{tar_path}: no images in class folders (expected [root/]<class>/<image> inside the tar)")
    depth = min(len(f) for f in folders) - 1  # every image keeps at least its class folder
    while depth > 0 and len({f[:depth] for f in folders}) > 1:
        depth -= 1
    records = [Record(f"{tar_path.resolve()}::{name}", name.parts[depth], data=data) for name, data in members]
    return sorted(records, key=lambda r: r.path)


def read_source(source: str | Path) -> list[Record]:
    """Dispatch on what ``source`` is (data/inputs.py): folder, .csv (or a folder with split.csv),
    map file (.txt/.tsv/.map), or a tar of class folders."""
    source = Path(source)
    kind = inputs.input_kind(source)
    if kind == inputs.CSV:
        return from_csv(source / "split.csv" if source.is_dir() else source)
    if kind == inputs.FOLDER:
        return from_folder(source)
    if kind == inputs.MAP_FILE:
        return from_map_file(source)
    if kind == inputs.TAR:
        return from_tar(source)
    raise ValueError(f"{source}: a {kind} input is not a list of image files (want a folder, .csv, "
                     "a map file .txt/.tsv/.map, or a .tar of class folders)")


def class_names(records: list[Record]) -> list[str]:
    """Sorted class names; integer labels (map files) sort numerically."""
    labels = {r.label for r in records}
    if all(lbl.isdigit() for lbl in labels):
        return [str(i) for i in sorted(int(lbl) for lbl in labels)]
    return sorted(labels)


def stratified_split(records: list[Record], fractions=(0.7, 0.1, 0.2), seed: int = 0) -> list[Record]:
    """Assign train/val/test per class in the given fractions; records that have a split keep it.

    Seeded and order-independent (each class's files are shuffled from their sorted order), so the
    same files always land in the same split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    by_class: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.split is None:
            by_class[r.label].append(r)
    assigned = {}
    for label, items in sorted(by_class.items()):
        items = sorted(items, key=lambda r: r.path)
        seed_for_class = int(hashlib.sha256(f"{seed}:{label}".encode()).hexdigest()[:8], 16)
        random.Random(seed_for_class).shuffle(items)
        n_train = round(fractions[0] * len(items))
        n_val = round(fractions[1] * len(items))
        for i, r in enumerate(items):
            assigned[r.path] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return [r if r.split is not None else replace(r, split=assigned[r.path]) for r in records]
