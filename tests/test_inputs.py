"""data/inputs.py, the one place that decides what kind of input a path is; and a tar of class
folders, which `pack` used to take for CIFAR ("no CIFAR images found"), packs like the same folder."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from gearsight.commands.train_cmd import _input_kind
from gearsight.data import inputs
from gearsight.data.inputs import detection_input, input_kind
from gearsight.data.pack import PackedDataset
from gearsight.data.sources import from_tar, read_source
from gearsight.workflow import pack_source
from imagefactory import make_good_images

COLOURS = {"boots": (200, 30, 30), "tents": (30, 160, 40), "rope": (40, 40, 210)}


def _class_tree(root: Path, per_class: int = 5) -> Path:
    """root/<class>/<i>.png|jpg: real image files of different sizes and formats."""
    for c, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            im = Image.new("RGB", (20 + 7 * i, 30 - 3 * c), colour)
            im.putpixel((i, c), (255 - i, i * 9, 0))
            im.save(root / name / (f"{i}.png" if i % 2 else f"{i}.jpg"), quality=95)
    return root


def _tar(tree: Path, out: Path, arcname: str | None = None, mode: str = "w") -> Path:
    with tarfile.open(out, mode) as tar:
        tar.add(tree, arcname=arcname if arcname is not None else tree.name)
    return out


def test_a_tar_of_class_folders_packs_exactly_as_the_folder_does(tmp_path):
    tree = _class_tree(tmp_path / "gear")
    for arcname, mode, name in [("gear", "w", "gear.tar"), ("", "w:gz", "flat.tar.gz"), ("./x/gear", "w", "deep.tgz")]:
        archive = _tar(tree, tmp_path / name, arcname, mode)
        assert input_kind(archive) == inputs.TAR
        from_folder = pack_source(tree, tmp_path / "folder", size=16, progress=False)
        from_tar_ = pack_source(archive, tmp_path / f"packed-{name}", size=16, progress=False)
        assert from_tar_["classes"] == ["boots", "rope", "tents"] == from_folder["classes"]
        assert from_tar_["counts"] == from_folder["counts"] and from_tar_["counts"]["packed"] == 15
        for array in ("images.npy", "labels.npy", "splits.npy"):  # same files, same order, same split
            assert np.array_equal(np.load(tmp_path / f"packed-{name}" / array), np.load(tmp_path / "folder" / array))
        item = from_tar_["items"][0]
        assert item["path"].startswith(f"{archive.resolve()}::") and item["path"].endswith("boots/0.jpg")


def test_the_pack_command_takes_a_tar_of_class_folders(tmp_path):
    archive = _tar(_class_tree(tmp_path / "photos", per_class=4), tmp_path / "photos.tar")
    proc = run_cli("pack", archive, tmp_path / "out", "--size", "12", "--quiet")
    assert "packed 12" in proc.stdout and "3 classes" in proc.stdout, proc.stdout
    assert len(PackedDataset(tmp_path / "out")) == 12


def test_a_tar_skips_hidden_files_and_loose_images_and_reads_odd_images_like_a_folder(tmp_path):
    make_good_images(tmp_path / "t" / "odd")
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "loose.png")  # no class folder: left out, as by from_folder
    (tmp_path / "t" / "odd" / ".hidden.png").write_bytes((tmp_path / "t" / "loose.png").read_bytes())
    archive = _tar(tmp_path / "t", tmp_path / "t.tar", "")
    records = from_tar(archive)
    assert {r.label for r in records} == {"odd"} and all(r.data for r in records)
    assert len(records) == len([p for p in (tmp_path / "t" / "odd").iterdir() if not p.name.startswith(".")])
    with tarfile.open(tmp_path / "empty.tar", "w") as tar:
        tar.add(tmp_path / "t" / "loose.png", arcname="loose.png")
    with pytest.raises(ValueError, match="no images in class folders"):
        read_source(tmp_path / "empty.tar")


def test_cifar_tars_are_still_cifar(tmp_path):
    tree = tmp_path / "cifar" / "train" / "cat"
    tree.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tree / "1.png")
    assert input_kind(_tar(tmp_path / "cifar", tmp_path / "cifar10_jpg.tar")) == inputs.CIFAR
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "data_batch_1").write_bytes(b"x")
    assert input_kind(_tar(tmp_path / "b", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", "w:gz")) == inputs.CIFAR


def test_every_kind_is_decided_in_one_place(tmp_path):
    _class_tree(tmp_path / "folder", per_class=1)
    (tmp_path / "withcsv").mkdir()
    (tmp_path / "withcsv" / "split.csv").write_text("path,label\n")
    for name in ("a.csv", "m.txt", "m.tsv", "m.map", "d.train.ctf", "notes.pdf"):
        (tmp_path / name).write_text("")
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "trainLabels.csv").write_text("id,label\n")
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "images.npy").write_bytes(b"")
    (tmp_path / "packed" / "meta.json").write_text(json.dumps({"format": "gearsight-pack"}))
    expected = {"folder": inputs.FOLDER, "withcsv": inputs.CSV, "a.csv": inputs.CSV, "m.txt": inputs.MAP_FILE,
                "m.tsv": inputs.MAP_FILE, "m.map": inputs.MAP_FILE, "d.train.ctf": inputs.CTF,
                "cifar-10-batches-py": inputs.CIFAR, "kaggle": inputs.CIFAR, "packed": inputs.PACKED}
    assert {name: input_kind(tmp_path / name) for name in expected} == expected
    with pytest.raises(ValueError, match="unknown input type"):
        input_kind(tmp_path / "notes.pdf")
    with pytest.raises(FileNotFoundError):
        input_kind(tmp_path / "none.tar")
    # train takes a map file by any of its names (it took only .txt), a .ctf, else a packed folder
    assert [_input_kind(str(tmp_path / n)) for n in ("m.tsv", "m.map", "d.train.ctf", "packed", "notes.pdf")] == [
        "map-file", "map-file", "ctf", "packed", None]
    with pytest.raises(FileNotFoundError, match="input not found"):
        _input_kind(str(tmp_path / "gone_map.txt"))


def test_detection_inputs(tmp_path):
    (tmp_path / "bccd" / "BCCD" / "Annotations").mkdir(parents=True)
    assert detection_input(tmp_path / "bccd") == ("voc", tmp_path / "bccd" / "BCCD")
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_train.json").write_text("{}")
    assert detection_input(tmp_path / "coco") == ("coco", tmp_path / "coco" / "annotations" / "instances_train.json")
    with pytest.raises(ValueError, match="neither a Pascal VOC folder"):
        detection_input(tmp_path / "coco" / "annotations")
    with pytest.raises(FileNotFoundError):
        detection_input(tmp_path / "none")
