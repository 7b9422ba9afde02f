"""Sources, splits and the packed format, on real files written into a temp folder."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gearsight.data.pack import PackedDataset, PackOptions, pack
from gearsight.data.sources import (Record, class_names, from_csv, from_folder, from_map_file, read_source,
                                    stratified_split)
from gearsight.image.resize import fit_square
from imagefactory import make_bad_images, make_good_images


def _tree_with_hostile_files(root: Path) -> tuple[int, int]:
    """root/good/* decodable oddities, root/bad/* undecodable files; returns (n_good, n_bad)."""
    good = make_good_images(root / "good")
    bad = make_bad_images(root / "bad")
    return len(good), len(bad)


def _pack_tree(root: Path, out: Path, workers: int = 2) -> dict:
    records = stratified_split(from_folder(root), (0.5, 0.25, 0.25), seed=0)
    return pack(records, out, PackOptions(size=32), workers=workers, progress=False)


def test_pack_skips_and_reports_bad_files_and_keeps_every_good_one(tmp_path):
    n_good, n_bad = _tree_with_hostile_files(tmp_path / "src")
    meta = _pack_tree(tmp_path / "src", tmp_path / "packed")
    assert meta["counts"]["read"] == n_good + n_bad
    assert meta["counts"]["packed"] == n_good
    assert meta["counts"]["skipped"] == n_bad
    skipped = {Path(s["path"]).name: s["reason"] for s in meta["skipped"]}
    assert all(Path(s["path"]).parent.name == "bad" for s in meta["skipped"])
    assert all(reason for reason in skipped.values())
    assert any("truncated" in r for r in skipped.values())
    ds = PackedDataset(tmp_path / "packed")
    assert ds.images.shape == (n_good, 32, 32, 3) and ds.images.dtype == np.uint8
    assert set(ds.classes) == {"good", "bad"} and (ds.labels == ds.classes.index("good")).all()


def test_pack_is_byte_identical_across_runs_and_worker_counts(tmp_path):
    _tree_with_hostile_files(tmp_path / "src")
    _pack_tree(tmp_path / "src", tmp_path / "a", workers=2)
    _pack_tree(tmp_path / "src", tmp_path / "b", workers=1)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["images.npy", "labels.npy", "meta.json", "splits.npy"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_packed_pixels_and_provenance_match_the_source(tmp_path):
    src = tmp_path / "src"
    for label, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (src / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40 + i, 20), colour).save(src / label / f"{i}.png")
    meta = _pack_tree(src, tmp_path / "packed")
    ds = PackedDataset(tmp_path / "packed")
    for i, item in enumerate(meta["items"]):
        data = Path(item["path"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        expected = fit_square(np.asarray(Image.open(item["path"]).convert("RGB")), 32, "pad", 255)
        assert np.array_equal(ds.images[i], expected)
        assert ds.classes[ds.labels[i]] == item["label"]
    # pad mode: a 2:1 image leaves white bars top and bottom
    assert (ds.images[0, 0] == 255).all() and tuple(ds.images[0, 16, 16]) in {(255, 0, 0), (0, 0, 255)}


def test_fit_square_modes():
    img = np.zeros((50, 100, 3), np.uint8)
    assert fit_square(img, 32, "pad").shape == (32, 32, 3)
    assert (fit_square(img, 32, "pad")[0] == 255).all()
    assert (fit_square(img, 32, "crop") == 0).all()
    assert fit_square(img, 32, "stretch").shape == (32, 32, 3)
    with pytest.raises(ValueError, match="resize mode"):
        fit_square(img, 32, "squash")


def test_csv_source_relative_paths_and_errors_name_the_line(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    good = tmp_path / "good.csv"
    good.write_text("path,label,split\nimg/a.png,cat,test\n")
    assert from_csv(good) == [Record(str((tmp_path / "img" / "a.png").resolve()), "cat", "test")]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,split\nimg/a.png,cat,train\nimg/a.png,cat,holdout\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: split 'holdout'"):
        from_csv(bad)
    (tmp_path / "nohdr.csv").write_text("file,class\nimg/a.png,cat\n")
    with pytest.raises(ValueError, match="missing"):
        from_csv(tmp_path / "nohdr.csv")


def test_map_file_source_keeps_order_and_rejects_bad_labels(tmp_path):
    m = tmp_path / "map.txt"
    m.write_text("b.png\t1\na.png\t0\n\nc.png\t10\n")
    records = from_map_file(m)
    assert [Path(r.path).name for r in records] == ["b.png", "a.png", "c.png"]
    assert class_names(records) == ["0", "1", "10"]  # numeric order, not string order
    m.write_text("a.png\t0\na.png cat\n")
    with pytest.raises(ValueError, match=r"map\.txt, line 2"):
        from_map_file(m)
    with pytest.raises(FileNotFoundError):
        read_source(tmp_path / "missing.txt")


def test_stratified_split_is_seeded_stratified_and_respects_given_splits():
    records = [Record(f"/x/{c}/{i}.jpg", c) for c in ("a", "b") for i in range(50)]
    records.append(Record("/x/a/fixed.jpg", "a", "test"))
    one = stratified_split(records, (0.7, 0.1, 0.2), seed=3)
    two = stratified_split(list(reversed(records)), (0.7, 0.1, 0.2), seed=3)
    assert {r.path: r.split for r in one} == {r.path: r.split for r in two}
    for c in ("a", "b"):
        splits = [r.split for r in one if r.label == c and "fixed" not in r.path]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (35, 5, 10)
    assert next(r for r in one if "fixed" in r.path).split == "test"
    other_seed = stratified_split(records, (0.7, 0.1, 0.2), seed=4)
    assert {r.path: r.split for r in one} != {r.path: r.split for r in other_seed}


def test_packed_dataset_refuses_non_packed_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="gearsight pack"):
        PackedDataset(tmp_path)


def test_a_pack_interrupted_midway_leaves_the_older_pack_as_it_was(tmp_path, monkeypatch):
    """PackWriter: nothing in the folder changes before every image is decoded, and the temporary
    array goes away; meta.json is written last (a folder with one holds a whole pack)."""
    import gearsight.data.pack as pack_module

    _tree_with_hostile_files(tmp_path / "src")
    _pack_tree(tmp_path / "src", tmp_path / "packed", workers=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "packed").iterdir()}
    real, calls = pack_module._decode_one, []

    def decode_then_fail(job):
        calls.append(job)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(pack_module, "_decode_one", decode_then_fail)
    with pytest.raises(KeyboardInterrupt):
        _pack_tree(tmp_path / "src", tmp_path / "packed", workers=1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "packed").iterdir()} == before
    assert len(PackedDataset(tmp_path / "packed")) > 0  # still reads as the older pack


def test_pack_and_cifar_share_one_worker_default_and_the_help_says_it(monkeypatch):
    import os

    import gearsight.data.pack as pack_module
    from gearsight.cli import build_parser

    assert pack_module.default_workers() == min(2, os.cpu_count() or 1)
    help_text = next(a.help for a in build_parser()._subparsers._group_actions[0].choices["pack"]._actions
                     if a.dest == "workers")
    assert "2, or 1 on a one-core machine" in help_text
