"""CIFAR-10 readers on small real archives written here, the restricted unpickler, the packed writer."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gearsight.data.cifar as cifar
from conftest import require_dataset
from gearsight.cntk.dataset import MapFileDataset
from gearsight.data.cifar import (UnsafePickleError, load_cifar, read_cifar, safe_unpickle, write_cifar_map_files,
                                  write_packed_cifar)
from gearsight.data.pack import PackedDataset

CLASSES = ["bird", "cat", "ship"]  # sorted, as the readers order classes
COLOURS = {"bird": (200, 40, 40), "cat": (40, 200, 40), "ship": (40, 40, 200)}


def _image(label: str, i: int) -> np.ndarray:
    """32x32: the class colour, with a brightness that encodes ``i`` so images differ."""
    return np.clip(np.full((32, 32, 3), COLOURS[label], int) + 3 * i, 0, 255).astype(np.uint8)


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jpeg_tar(path: Path, n_train: int = 4, n_test: int = 2, prefix: str = "", mode: str = "w") -> Path:
    """A tar of train/<class>/NNNN.jpg and test/<class>/NNNN.jpg in shuffled order, plus three files
    that must be reported: a README, a truncated JPEG and a 40x40 image."""
    members = [(f"{prefix}{split}/{label}/{i:04d}.jpg", _encode(_image(label, i), "JPEG"))
               for split, n in (("train", n_train), ("test", n_test)) for label in CLASSES for i in range(n)]
    members = [members[i] for i in np.random.default_rng(0).permutation(len(members))]
    members += [(f"{prefix}README.txt", b"CIFAR-10 as JPEG"),
                (f"{prefix}train/cat/9998.jpg", _encode(_image("cat", 0), "JPEG")[:100]),
                (f"{prefix}train/cat/9999.jpg", _encode(np.zeros((40, 40, 3), np.uint8), "JPEG"))]
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


@pytest.mark.parametrize("mode,prefix", [("w", ""), ("w:gz", "CIFAR-10-images/")])
def test_jpeg_tar_is_read_from_inside_the_archive(tmp_path, mode, prefix):
    tar_path = _jpeg_tar(tmp_path / "cifar.tar", prefix=prefix, mode=mode)
    data = load_cifar(tar_path)
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    assert data["classes"] == CLASSES and data["kind"] == "class-folders-tar"
    assert x_train.shape == (12, 32, 32, 3) and x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert x_test.shape == (6, 32, 32, 3) and y_test.tolist() == [0, 0, 1, 1, 2, 2]
    assert y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted by class, then name
    for k, (label, i) in enumerate((lbl, i) for lbl in CLASSES for i in range(4)):
        assert np.abs(x_train[k].astype(int) - _image(label, i)).max() <= 4  # JPEG q95 of a flat colour
    reasons = {Path(s["path"].split("::")[1]).name: s["reason"] for s in data["skipped"]}
    assert set(reasons) == {"README.txt", "9998.jpg", "9999.jpg"}
    assert "truncated" in reasons["9998.jpg"] or "corrupt" in reasons["9998.jpg"]
    assert reasons["9999.jpg"] == "image is 40x40, not 32x32"


def test_provenance_is_tar_member_and_member_sha256(tmp_path):
    tar_path = _jpeg_tar(tmp_path / "cifar.tar")
    split = read_cifar(tar_path).splits["test"]
    assert split.paths[0] == f"{tar_path}::test/bird/0000.jpg"
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile("test/bird/0000.jpg").read()
    assert split.sha256[0] == hashlib.sha256(member).hexdigest()


def test_extracted_class_folders_give_the_same_arrays(tmp_path):
    tar_path = _jpeg_tar(tmp_path / "cifar.tar")
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "tree", filter="data")
    from_tar, from_tree = load_cifar(tar_path), load_cifar(tmp_path / "tree")
    assert from_tree["kind"] == "class-folders"
    for split in ("train", "test"):
        np.testing.assert_array_equal(from_tar[split][0], from_tree[split][0])
        np.testing.assert_array_equal(from_tar[split][1], from_tree[split][1])


def _kaggle(root: Path, labels: list[str]) -> Path:
    (root / "train").mkdir(parents=True)
    for i, label in enumerate(labels, start=1):
        (root / "train" / f"{i}.png").write_bytes(_encode(_image(label, i), "PNG"))
    (root / "trainLabels.csv").write_text("id,label\n" + "".join(f"{i},{lbl}\n" for i, lbl in enumerate(labels, 1)))
    return root


def test_kaggle_layout_is_read_in_id_order_with_exact_pixels(tmp_path):
    labels = ["cat", "ship", "bird", "cat"] * 3
    root = _kaggle(tmp_path / "kaggle", labels)
    (root / "train" / "99.png").write_bytes(_encode(_image("cat", 0), "PNG"))  # no row in the CSV
    data = load_cifar(root)
    images, y = data["train"]
    assert data["kind"] == "kaggle" and data["test"] is None and data["classes"] == CLASSES
    assert y.tolist() == [CLASSES.index(lbl) for lbl in labels]  # 1, 2, ..., 12: numeric, not 1, 10, 11, 12, 2
    np.testing.assert_array_equal(images[9], _image(labels[9], 10))
    assert [(Path(s["path"]).name, s["reason"]) for s in data["skipped"]] == [("99.png", "no row in trainLabels.csv")]


@pytest.mark.parametrize("csv_text,message", [
    ("id,label\n1,cat\n2,ship\n", r"trainLabels.csv, line 3: id 2 has no image"),
    ("image,class\n1,cat\n", r"trainLabels.csv, line 1: expected the header 'id,label'"),
    ("id,label\n1,cat\nx,ship\n", r"trainLabels.csv, line 3: expected '<integer id>,<label>'"),
    ("id,label\n1,cat\n1,ship\n", r"trainLabels.csv, line 3: id 1 repeats line 2"),
])
def test_kaggle_csv_errors_name_the_line(tmp_path, csv_text, message):
    root = _kaggle(tmp_path / "kaggle", ["cat"])
    (root / "trainLabels.csv").write_text(csv_text)
    with pytest.raises(ValueError, match=message):
        load_cifar(root)


def _batches(folder: Path, numpy1_names: bool = False) -> dict[str, np.ndarray]:
    """cifar-10-batches-py as the official archive has it: pickled dicts with bytes keys, planar
    RGB rows of 3072 uint8. Returns the rows written per file."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = {}
    for name in (*cifar.TRAIN_BATCHES, "test_batch"):
        rows[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 3, 4)],
                 b"data": rows[name], b"filenames": [f"img_{i}.png".encode() for i in range(4)]}
        blob = pickle.dumps(batch, protocol=2)  # the protocol of the published files
        if numpy1_names:
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(blob)
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": 4, b"num_vis": 3072}, protocol=2))
    return rows


@pytest.mark.parametrize("numpy1_names", [False, True])
def test_python_batches_folder(tmp_path, numpy1_names):
    rows = _batches(tmp_path / "cifar-10-batches-py", numpy1_names)
    data = read_cifar(tmp_path)  # the parent folder is found too
    assert data.kind == "python-batches" and data.classes == CLASSES
    train, test = data.splits["train"], data.splits["test"]
    assert train.images.shape == (20, 32, 32, 3) and test.images.shape == (4, 32, 32, 3)
    first = rows["data_batch_1"][0].reshape(3, 32, 32).transpose(1, 2, 0)  # planar R, G, B -> HWC
    np.testing.assert_array_equal(train.images[0], first)
    np.testing.assert_array_equal(test.images[3], rows["test_batch"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert train.paths[5] == f"{tmp_path / 'cifar-10-batches-py' / 'data_batch_2'}#1"
    assert train.sha256[5] == hashlib.sha256(rows["data_batch_2"][1].tobytes()).hexdigest()


def test_python_batches_read_straight_from_the_downloaded_tar_gz(tmp_path):
    rows = _batches(tmp_path / "src" / "cifar-10-batches-py")
    download = tmp_path / "datasets" / "cifar10"
    download.mkdir(parents=True)
    with tarfile.open(download / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = load_cifar(download)  # the folder `gearsight datasets download cifar10` leaves
    np.testing.assert_array_equal(data["test"][0][0], rows["test_batch"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert data["train"][0].shape == (20, 32, 32, 3)
    paths = read_cifar(download / "cifar-10-python.tar.gz").splits["train"].paths
    assert paths[0] == f"{download / 'cifar-10-python.tar.gz'}::cifar-10-batches-py/data_batch_1#0"


def test_missing_batch_file_is_named(tmp_path):
    _batches(tmp_path / "b")
    (tmp_path / "b" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_batch: missing"):
        load_cifar(tmp_path / "b")


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_a_batch_that_would_call_os_system(tmp_path):
    marker = tmp_path / "pwned"
    _batches(tmp_path / "b")
    evil = {b"data": _RunsACommand(marker), b"labels": []}
    (tmp_path / "b" / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"data_batch_3: refusing to unpickle posix.system"):
        load_cifar(tmp_path / "b")
    assert not marker.exists()
    pickle.loads(pickle.dumps(evil, protocol=2))  # the real pickle module would have run it
    assert marker.exists()
    with pytest.raises(ValueError, match="refusing to unpickle builtins.eval"):
        safe_unpickle(pickle.dumps(_Eval()), "x.pkl")
    with pytest.raises(ValueError, match="x.pkl: not a readable pickle"):
        safe_unpickle(b"\x80\x02}q\x00(", "x.pkl")


class _Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_write_packed_cifar_is_a_deterministic_stratified_gearsight_pack(tmp_path, monkeypatch):
    tar_path = _jpeg_tar(tmp_path / "cifar.tar", n_train=8, n_test=2)
    meta = write_packed_cifar(tar_path, tmp_path / "packed", val_fraction=0.25)
    ds = PackedDataset(tmp_path / "packed")
    assert ds.classes == CLASSES and ds.size == 32 and meta["resize"] == "crop" and meta["fill"] == 0
    assert meta["counts"] == {"read": 33, "packed": 30, "skipped": 3, "packed_train": 18, "packed_val": 6,
                              "packed_test": 6}
    _, val_labels = ds.subset("val")
    assert sorted(val_labels.tolist()) == [0, 0, 1, 1, 2, 2]  # 25% of each class
    test_images, _ = ds.subset("test")
    np.testing.assert_array_equal(test_images, load_cifar(tar_path)["test"][0])
    item = meta["items"][ds.indices("test")[0]]
    assert item["path"] == f"{tar_path}::test/bird/0000.jpg" and item["label"] == "bird" and item["split"] == "test"
    monkeypatch.setattr(cifar, "_MIN_PARALLEL", 0)  # decode these few images on 2 processes too
    write_packed_cifar(tar_path, tmp_path / "again", val_fraction=0.25, workers=2)
    for name in ("images.npy", "labels.npy", "splits.npy", "meta.json"):
        assert (tmp_path / "packed" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_packed_cifar_trains_with_the_gearsight_trainer(tmp_path):
    from gearsight.workflow import train_packed

    write_packed_cifar(_jpeg_tar(tmp_path / "cifar.tar", n_train=12, n_test=2), tmp_path / "packed", val_fraction=0.25)
    summary = train_packed(tmp_path / "packed", tmp_path / "run", progress=False, epochs=1, batch_size=8,
                           widths=[8, 16], threads=1, amp="off")
    assert (tmp_path / "run" / "model.safetensors").is_file() and 0.0 <= summary["best_val_acc"] <= 1.0


def test_map_files_hold_the_same_pixels_for_the_map_file_reader(tmp_path):
    tar_path = _jpeg_tar(tmp_path / "cifar.tar")
    maps = write_cifar_map_files(tar_path, tmp_path / "maps")
    assert set(maps) == {"train", "test"} and maps["test"].read_text().splitlines()[0] == "test/bird/00000.png\t0"
    expected = load_cifar(tar_path)
    for split, map_file in maps.items():
        (images, labels), = list(MapFileDataset(map_file, num_classes=3).minibatches(100))
        np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), expected[split][0])
        np.testing.assert_array_equal(labels.numpy(), expected[split][1])


def test_first_100_members_of_the_shared_jpeg_tar():
    tar_path = require_dataset("cifar10") / "cifar10_jpg.tar"
    data = read_cifar(tar_path, limit=100)
    train = data.splits["train"]
    assert train.images.shape == (100, 32, 32, 3) and not data.skipped
    assert data.classes == ["airplane"] and set(train.labels.tolist()) == {0}
    assert train.paths[0] == f"{tar_path}::train/airplane/0000.jpg"
    with tarfile.open(tar_path) as tar:  # walk to the member: a lookup by name would index all 60k
        member = next(m for m in tar if m.name == "train/airplane/0000.jpg")
        assert train.sha256[0] == hashlib.sha256(tar.extractfile(member).read()).hexdigest()


def test_pack_cli_recognises_a_cifar_tar_and_keeps_its_test_set(tmp_path):
    from conftest import run_cli
    from gearsight.data.pack import PackedDataset

    tar = _jpeg_tar(tmp_path / "cifar.tar", n_train=10, n_test=3)
    proc = run_cli("pack", tar, tmp_path / "packed", "--split", "0.8,0.2,0.0", "--quiet")
    ds = PackedDataset(tmp_path / "packed")
    n_classes = len(ds.classes)
    assert len(ds.indices("test")) == 3 * n_classes  # CIFAR's own test set, not a random 20%
    assert len(ds.indices("val")) == 2 * n_classes
    assert ds.meta["counts"]["skipped"] >= 2 and "truncated" in proc.stdout  # bad members reported
