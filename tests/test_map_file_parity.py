"""`pack` and `train` accept exactly the same map files: both read them with gearsight.cntk.mapfile.

Checked on CNTK's own map files (../shared/data/cntk: zip members, the `...` prefix, 3-column
lines, Windows paths, bad labels, short lines) and on a map file written here with every form at
once (byte-order mark, key column, backslashes, `...`, `archive.zip@/member`), packed for real.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_dataset
from gearsight.cntk.dataset import MapFileDataset
from gearsight.data.pack import PackedDataset, PackOptions, pack
from gearsight.data.sources import from_map_file, read_source, stratified_split
from gearsight.image.decode import DecodeError
from gearsight.image.resize import fit_square


def _packs(map_file: Path):
    """What pack's source reader makes of a map file: [(source, label)] or ("error", message)."""
    try:
        return [(r.path, int(r.label)) for r in read_source(map_file)]
    except ValueError as exc:
        return "error", str(exc)


def _trains(map_file: Path):
    """What training's reader (MapFileDataset) makes of it, in the same terms."""
    try:
        ds = MapFileDataset(map_file)
    except ValueError as exc:
        return "error", str(exc)
    return [(ds.sources[i], int(ds.labels[i])) for i in range(len(ds.labels))]


def _decodable(ds: MapFileDataset) -> list[int]:
    ok = []
    for i in range(len(ds)):
        try:
            ds.decode(i)
            ok.append(i)
        except DecodeError:
            pass
    return ok


def test_pack_and_train_accept_the_same_cntk_map_files(tmp_path):
    data = require_dataset("cntk") / "image" / "data"
    maps = sorted(p for p in data.iterdir() if p.name.endswith(("_map.txt", ".map")) and "Base64" not in p.name)
    assert len(maps) >= 15, maps  # base64 maps are CNTK's other deserializer: training only (base64=True)
    accepted = rejected = 0
    for map_file in maps:
        packs, trains = _packs(map_file), _trains(map_file)
        assert packs == trains, map_file.name
        if packs[0] == "error":
            rejected += 1
            continue
        accepted += 1
        # ... and packing for real keeps exactly the entries training can decode
        records = stratified_split(from_map_file(map_file), (1.0, 0.0, 0.0), seed=0)
        meta = pack(records, tmp_path / map_file.stem, PackOptions(size=8), workers=1, progress=False)
        ds = MapFileDataset(map_file)
        assert meta["counts"]["packed"] == len(_decodable(ds)), map_file.name
        assert meta["counts"]["read"] == len(ds), map_file.name
    assert accepted >= 12 and rejected == 2  # ImageReaderBadMap (a 1-column line), ImageReaderBadLabel ('blah')


def test_the_three_column_form_and_every_path_form_pack_as_training_reads_them(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    (tmp_path / "sub").mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        Image.new("RGB", (12, 9), colours[i]).save(tmp_path / "sub" / name)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for i, name in [(2, "c.png"), (3, "d.jpg")]:
            buf = io.BytesIO()
            Image.new("RGB", (10, 14), colours[i]).save(buf, "PNG" if name.endswith("png") else "JPEG")
            zf.writestr(f"chunk/{name}", buf.getvalue())
    lines = ["k1\tsub\\a.png\t0",            # key column + a Windows separator
             ".../sub/b.png\t1",             # CNTK's "relative to the map file" prefix
             "k3\timgs.zip@/chunk/c.png\t2",  # a zip member, 3 columns
             "imgs.zip@/chunk/d.jpg\t3"]
    map_file = tmp_path / "map.txt"
    map_file.write_text("\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8")  # BOM, CRLF

    assert _packs(map_file) == _trains(map_file)
    assert [label for _, label in _packs(map_file)] == [0, 1, 2, 3]

    records = stratified_split(from_map_file(map_file), (1.0, 0.0, 0.0), seed=0)
    meta = pack(records, tmp_path / "packed", PackOptions(size=16), workers=1, progress=False)
    assert meta["counts"] == {"read": 4, "packed": 4, "skipped": 0, "packed_train": 4, "packed_val": 0,
                              "packed_test": 0}
    assert [item["path"].replace(str(tmp_path), "") for item in meta["items"]] == [
        "/sub/a.png", "/sub/b.png", "/imgs.zip@chunk/c.png", "/imgs.zip@chunk/d.jpg"]
    packed = PackedDataset(tmp_path / "packed")
    ds = MapFileDataset(map_file)
    for i in range(4):  # the same pixels, decoded by training's reader and fitted as pack fits them
        assert np.array_equal(packed.images[i], fit_square(ds.decode(i), 16, "pad", 255))
    assert packed.labels.tolist() == [0, 1, 2, 3]


def test_a_missing_zip_member_is_skipped_by_pack_with_the_reason_training_gives(tmp_path):
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
        zf.writestr("x.png", buf.getvalue())
    map_file = tmp_path / "map.txt"
    map_file.write_text("imgs.zip@/x.png\t0\nimgs.zip@/gone.png\t1\n")
    meta = pack(stratified_split(from_map_file(map_file), (1.0, 0.0, 0.0)), tmp_path / "p", PackOptions(size=8),
                workers=1, progress=False)
    assert meta["counts"]["packed"] == 1
    with pytest.raises(DecodeError) as exc:
        MapFileDataset(map_file).decode(1)
    assert meta["skipped"][0]["reason"] == exc.value.reason == "no such member in the zip archive"
