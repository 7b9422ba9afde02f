"""What kind of input a path is: the one place that decides, for ``pack``, ``train`` and ``detect``.

    input_kind("photos.tar")        # -> "tar": class folders inside a tar
    detection_input("bccd/")        # -> ("voc", Path("bccd/BCCD"))

Kinds, tested in this order (the command that takes each in brackets):

    packed    a folder written by ``gearsight pack`` (its meta.json)                  [train]
    cifar     CIFAR-10: a ``cifar-10-batches-py`` folder (or one holding it), Kaggle's
              ``trainLabels.csv`` + ``train/``, or a tar of the python batches or of
              ``train|test/<class>/`` images (read by data/cifar.py)                  [pack]
    csv       a ``.csv`` (``path,label[,split]``), or a folder holding ``split.csv``   [pack]
    folder    class folders, ``root/<class>/<file>``                                  [pack]
    tar       a ``.tar``/``.tar.gz``/``.tgz`` of class folders, ``[root/]<class>/<file>`` [pack]
    map-file  a CNTK map file (``.txt``, ``.tsv``, ``.map``; gearsight.cntk.mapfile)  [pack, train]
    ctf       CNTK Text Format (``.ctf``; gearsight.cntk.ctf)                          [train]

A tar is CIFAR when its first image or batch member says so (``data_batch_*``/``test_batch``/
``batches.meta``, or an image at ``.../train|test/<class>/<image>``, the layout of CIFAR's JPEG
tar); any other tar of images is class folders, packed like a folder of the same tree.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path, PurePosixPath

PACKED, CIFAR, CSV, FOLDER, TAR, MAP_FILE, CTF = "packed", "cifar", "csv", "folder", "tar", "map-file", "ctf"
KINDS = (PACKED, CIFAR, CSV, FOLDER, TAR, MAP_FILE, CTF)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAP_FILE_SUFFIXES = {".txt", ".tsv", ".map"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CIFAR_BATCHES_DIR = "cifar-10-batches-py"
CIFAR_BATCH_FILES = {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                     "batches.meta"}
_PEEK = 200  # tar members looked at before deciding: a README or folders first must not decide


def input_kind(path: str | Path) -> str:
    """One of KINDS for a classification input; FileNotFoundError if ``path`` does not exist,
    ValueError naming what is accepted if it is none of them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    name = path.name.lower()
    if path.is_dir():
        if _is_packed(path):
            return PACKED
        if name == CIFAR_BATCHES_DIR or (path / CIFAR_BATCHES_DIR).is_dir() or (path / "trainLabels.csv").is_file():
            return CIFAR
        if (path / "split.csv").is_file():
            return CSV
        return FOLDER
    if name.endswith(TAR_SUFFIXES):
        return CIFAR if _tar_is_cifar(path) else TAR
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CSV
    if suffix in MAP_FILE_SUFFIXES:
        return MAP_FILE
    if suffix == ".ctf":
        return CTF
    raise ValueError(f"{path}: unknown input type (want a folder of class folders, a .csv, a map file "
                     f"{'/'.join(sorted(MAP_FILE_SUFFIXES))}, a .tar of class folders, a CIFAR-10 archive, a .ctf, "
                     "or a packed folder)")


def _is_packed(folder: Path) -> bool:
    meta = folder / "meta.json"
    if not (meta.is_file() and (folder / "images.npy").is_file()):
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == "gearsight-pack"
    except (ValueError, OSError, AttributeError):
        return False


def _tar_is_cifar(path: Path) -> bool:
    """Decided by the first image or CIFAR batch member (see the module docstring)."""
    try:
        with tarfile.open(path) as tar:
            for i, member in enumerate(tar):
                if i >= _PEEK:
                    break
                if not member.isfile():
                    continue
                member_path = PurePosixPath(member.name)
                if member_path.name in CIFAR_BATCH_FILES:
                    return True
                if member_path.suffix.lower() in IMAGE_SUFFIXES and not hidden(member_path):
                    parts = member_path.parts
                    return len(parts) >= 3 and parts[-3] in ("train", "test")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the tar archive ({exc})") from None
    return False


def hidden(path: PurePosixPath) -> bool:
    """A member a class-folder reader leaves out: under a dot-folder, a dot-file, or macOS's ``__MACOSX``."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


# -- Detection data -----------------------------------------------------------------------------------

def find_voc_root(path: str | Path) -> Path | None:
    """``path`` if it holds ``Annotations/``, or its only child that does (``bccd/BCCD``), else None."""
    path = Path(path)
    if (path / "Annotations").is_dir():
        return path
    if path.is_dir():
        children = [c for c in path.iterdir() if (c / "Annotations").is_dir()]
        if len(children) == 1:
            return children[0]
    return None


def find_coco_json(path: Path) -> Path | None:
    """``path`` if it is a json file, or the only ``annotations/instances_*.json`` under a folder."""
    if path.is_file() and path.suffix == ".json":
        return path
    found = sorted(path.glob("annotations/instances_*.json")) if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def detection_input(path: str | Path) -> tuple[str, Path]:
    """("voc", the VOC root) or ("coco", the json file) for a detection dataset path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"detection data not found: {path}")
    voc_root = find_voc_root(path)
    if voc_root is not None:
        return "voc", voc_root
    coco_json = find_coco_json(path)
    if coco_json is not None:
        return "coco", coco_json
    raise ValueError(f"{path}: neither a Pascal VOC folder (Annotations/) nor a COCO json "
                     "(a .json file, or a folder with annotations/instances_*.json)")
