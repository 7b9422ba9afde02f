"""Compositing (paste, paste_on_backgrounds) and the outdoor benchmark builder, on real image files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from gearsight.data import outdoor
from gearsight.data.composite import SCALE_RANGE, paste, paste_on_backgrounds, prepare_backgrounds
from gearsight.data.pack import PackedDataset
from gearsight.workflow import pack_source

from conftest import require_dataset

RED, BLUE = (220, 30, 30), (20, 40, 200)


def disc_object(n=120, soft=False):
    """A red disc (the object) on white, its mask 255 inside; bbox = the disc's square."""
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2 + 0.5, xx - n / 2 + 0.5)
    inside = r <= n / 2 - 10
    mask = np.clip((n / 2 - 10 - r + 4) * 64, 0, 255).astype(np.uint8) if soft else inside.astype(np.uint8) * 255
    rgb = np.full((n, n, 3), 255, np.uint8)
    rgb[mask > 0] = RED
    return rgb, mask


def is_red(img):
    return (img[..., 0] > 150) & (img[..., 2] < 100)


def test_paste_puts_object_pixels_where_the_mask_says():
    rgb, mask = disc_object()
    scene = np.zeros((150, 300, 3), np.uint8) + np.array(BLUE, np.uint8)
    out = paste(rgb, mask, scene, scale=0.5, position=(0.0, 0.0), size=200)
    assert out.shape == (200, 200, 3) and out.dtype == np.uint8
    # The disc's bounding box (100 px) becomes 100 px in the top-left corner: a disc of radius 50 at (50, 50).
    yy, xx = np.mgrid[:200, :200]
    want = np.hypot(yy - 49.5, xx - 49.5) <= 50
    got = is_red(out)
    assert (got & want).sum() / (got | want).sum() > 0.95
    assert (out[~np.hypot(yy - 49.5, xx - 49.5).__le__(53)] == BLUE).all()  # the rest is the scene, untouched
    bottom_right = paste(rgb, mask, scene, scale=0.5, position=(1.0, 1.0), size=200)
    assert is_red(bottom_right)[150, 150] and not is_red(bottom_right)[50, 50]


def test_paste_brings_no_studio_white_along():
    rgb, mask = disc_object(soft=True)
    out = paste(rgb, mask, np.zeros((64, 64, 3), np.uint8), scale=0.9, position=(0.5, 0.5), size=97)
    # Red (220, 30, 30) over black can only be darker shades of that red: green = red * 30 / 220 up to
    # rounding. More green is the photo's white under the soft edge (resizing colour and mask apart,
    # not premultiplied, gives 8 levels more here).
    out = out.astype(int)
    assert (out[..., 1] - out[..., 0] * 30 / 220).max() <= 2.5
    assert (out[..., 2] - out[..., 0] * 30 / 220).max() <= 2.5


def test_random_placement_stays_in_range_and_in_frame():
    rgb, mask = disc_object()
    scene = np.random.default_rng(0).integers(0, 100, (90, 160, 3), dtype=np.uint8)  # never red
    for seed in range(20):
        out = paste(rgb, mask, scene, rng=np.random.default_rng(seed), size=128)
        ys, xs = np.nonzero(is_red(out))
        side = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert SCALE_RANGE[0] * 128 - 2 <= side <= SCALE_RANGE[1] * 128 + 2


def test_paste_refuses_an_empty_mask():
    rgb, mask = disc_object()
    with pytest.raises(ValueError, match="empty"):
        paste(rgb, np.zeros_like(mask), np.zeros((10, 10, 3), np.uint8))


# -- batched, for training -------------------------------------------------------------------------

def batch(n=8, h=16, w=16):
    x = torch.zeros((n, h, w, 3), dtype=torch.uint8)
    x[..., 0] = 200  # red objects
    masks = torch.zeros((n, h, w), dtype=torch.uint8)
    masks[:, :, : w // 2] = 255  # left half object
    masks[:, :, w // 2] = 128  # one soft column
    return x, masks


def pool(m=3, side=32):
    colours = torch.tensor([[0, 250, 0], [0, 0, 250], [250, 250, 250]], dtype=torch.uint8)[:m]
    return colours[:, None, None, :].expand(m, side, side, 3).clone()


def test_paste_on_backgrounds_keeps_the_object_and_replaces_the_rest():
    x, masks = batch()
    before = x.clone()
    out = paste_on_backgrounds(x, masks, pool(), torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(x, before) and out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[:, :, :8], x[:, :, :8])  # mask 255: exactly the object
    right = out[:, :, 9:].reshape(8, -1, 3)
    colours = {tuple(c) for c in pool()[:, 0, 0].tolist()}
    for img in right:  # mask 0: exactly one background colour per image
        assert len({tuple(p) for p in img.tolist()}) == 1 and tuple(img[0].tolist()) in colours
    soft = out[:, :, 8].int()  # mask 128: halfway between the object and the background
    assert ((soft - ((x[:, :, 8].int() + out[:, :, 9].int()) // 2)).abs() <= 2).all()


def test_paste_on_backgrounds_probability_and_determinism():
    x, masks = batch(n=400)
    out = paste_on_backgrounds(x, masks, pool(), torch.Generator().manual_seed(1), p=0.5)
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.4 < changed < 0.6
    again = paste_on_backgrounds(x, masks, pool(), torch.Generator().manual_seed(1), p=0.5)
    assert torch.equal(out, again)
    assert torch.equal(paste_on_backgrounds(x, masks, pool(), None, p=0.0), x)


def test_paste_on_backgrounds_nchw_matches_nhwc():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (6, 12, 10, 3), dtype=np.uint8))
    masks = torch.from_numpy(rng.integers(0, 256, (6, 12, 10), dtype=np.uint8))
    bgs = torch.from_numpy(rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8))
    nhwc = paste_on_backgrounds(x, masks, bgs, torch.Generator().manual_seed(3), p=0.7)
    nchw = paste_on_backgrounds(x.permute(0, 3, 1, 2).contiguous(), masks[:, None], bgs.permute(0, 3, 1, 2).contiguous(),
                                torch.Generator().manual_seed(3), p=0.7, layout="nchw")
    assert nchw.shape == (6, 3, 12, 10) and torch.equal(nchw.permute(0, 2, 3, 1), nhwc)


def test_paste_on_backgrounds_checks_its_inputs():
    x, masks = batch()
    with pytest.raises(ValueError, match="prepare_backgrounds"):
        paste_on_backgrounds(x, masks, pool(side=8), None, p=1.0)
    with pytest.raises(ValueError):
        paste_on_backgrounds(x.float(), masks, pool(), None)
    with pytest.raises(ValueError):
        paste_on_backgrounds(x, masks[:, :4], pool(), None)
    with pytest.raises(ValueError, match="layout='nchw'"):  # an NHWC pool for NCHW images
        paste_on_backgrounds(x.permute(0, 3, 1, 2), masks, pool(), None, layout="nchw")


def test_prepare_backgrounds_makes_crops_at_the_training_size():
    scenes = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    bgs = prepare_backgrounds(scenes, 16, margin=1.5, zooms=(1.0, 2.0))
    assert bgs.dtype == torch.uint8 and tuple(bgs.shape) == (3 * (1 + 4), 24, 24, 3)
    assert torch.equal(prepare_backgrounds(scenes, 16, margin=1.5, layout="nchw"), bgs.permute(0, 3, 1, 2))


# -- the outdoor benchmark ------------------------------------------------------------------------

def fake_sources(root, per_class=3, n_scenes=6):
    """A tiny gear folder (2 classes, studio photos, split.csv with train and test rows) and a
    folder of scene photos, all real JPEG files."""
    gear, scenes = root / "gear", root / "scenes"
    rows = []
    for c, colour in (("boots", (40, 40, 120)), ("tents", (230, 120, 20))):
        (gear / c).mkdir(parents=True)
        for i in range(per_class + 2):
            im = Image.new("RGB", (120 + 10 * i, 100), "white")
            ImageDraw.Draw(im).ellipse((20, 15, 90 + 5 * i, 85), fill=colour)
            im.save(gear / c / f"{c}{i}.jpg", quality=92)
            rows.append((f"{c}/{c}{i}.jpg", c, "test" if i < per_class else "train"))
    with open(gear / "split.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    scenes.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_scenes):
        Image.fromarray(rng.integers(0, 200, (60 + 5 * i, 90, 3), dtype=np.uint8)).save(scenes / f"{i:012d}.jpg")
    return gear / "split.csv", scenes


def test_scene_pools_are_disjoint_halves(tmp_path):
    _, scenes = fake_sources(tmp_path)
    bench, aug = outdoor.scene_files(scenes, "benchmark"), outdoor.scene_files(scenes, "augment")
    assert [p.name for p in bench] == [f"{i:012d}.jpg" for i in (0, 2, 4)]
    assert [p.name for p in aug] == [f"{i:012d}.jpg" for i in (1, 3, 5)]


def test_outdoor_builder_writes_a_packable_folder(tmp_path):
    gear_csv, scenes = fake_sources(tmp_path)
    summary = outdoor.build_outdoor(gear_csv, scenes, tmp_path / "out", seed=0, size=64, progress=False)
    assert summary["n"] == 6 and summary["counts"] == {"boots": 3, "tents": 3} and not summary["skipped"]
    with open(tmp_path / "out" / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"test"} and len(rows) == 6
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert {m["source"] for m in manifest} == {f"{c}/{c}{i}.jpg" for c in ("boots", "tents") for i in range(3)}
    assert {m["scene"] for m in manifest} <= {p.name for p in outdoor.scene_files(scenes, "benchmark")}
    assert (tmp_path / "out" / "README.md").is_file()
    for r in rows:
        with Image.open(tmp_path / "out" / r["path"]) as im:
            assert im.format == "PNG" and im.size == (64, 64)
    meta = pack_source(tmp_path / "out" / "split.csv", tmp_path / "packed", size=32, progress=False, workers=1)
    assert meta["counts"]["packed"] == 6 and meta["counts"]["packed_test"] == 6 and meta["counts"]["skipped"] == 0
    ds = PackedDataset(tmp_path / "packed")
    assert ds.classes == ["boots", "tents"] and len(ds.indices("test")) == 6


def test_outdoor_builder_is_deterministic_and_a_subset_matches(tmp_path):
    gear_csv, scenes = fake_sources(tmp_path)
    outdoor.build_outdoor(gear_csv, scenes, tmp_path / "a", seed=3, size=48, progress=False)
    outdoor.build_outdoor(gear_csv, scenes, tmp_path / "b", seed=3, size=48, limit=2, progress=False)
    with open(tmp_path / "b" / "split.csv", newline="") as f:
        subset = [r["path"] for r in csv.DictReader(f)]
    assert len(subset) == 2
    for p in subset:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()


def test_build_and_pack_and_background_pool(tmp_path):
    gear_csv, scenes = fake_sources(tmp_path, per_class=1)
    summary, meta = outdoor.build_and_pack(gear_csv, scenes, tmp_path / "out", tmp_path / "out16", pack_size=16,
                                           size=40, progress=False)
    assert summary["n"] == 2 and meta["counts"]["packed_test"] == 2 and meta["size"] == 16
    info = outdoor.build_background_pool(scenes, tmp_path / "pool.npy", side=32)
    arr = np.load(tmp_path / "pool.npy")
    assert arr.shape == (3, 32, 32, 3) and arr.dtype == np.uint8
    assert info["files"] == [p.name for p in outdoor.scene_files(scenes, "augment")]
    assert json.loads((tmp_path / "pool.json").read_text())["files"] == info["files"]
    assert not set(info["files"]) & {p.name for p in outdoor.scene_files(scenes, "benchmark")}


def test_outdoor_on_real_gear_and_coco(tmp_path):
    gear, coco = require_dataset("gear"), require_dataset("coco128")
    summary = outdoor.build_outdoor(gear / "split.csv", coco / "train2017", tmp_path / "out", limit=5, progress=False)
    assert summary["n"] == 5 and not summary["skipped"]
    meta = pack_source(tmp_path / "out" / "split.csv", tmp_path / "packed", size=64, progress=False, workers=1)
    assert meta["counts"]["packed_test"] == 5
    images = PackedDataset(tmp_path / "packed").images
    # A scene, not a studio: far less near-white than a catalog photo on white.
    assert ((np.asarray(images).min(axis=3) >= 240).mean(axis=(1, 2)) < 0.5).all()


def test_zoom_out_identity_and_half_scale():
    from gearsight.data.composite import zoom_out

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g)
    m = torch.zeros(3, 32, 32, dtype=torch.uint8)
    m[:, 8:24, 8:24] = 255
    same, same_m = zoom_out(x, m, torch.ones(3), torch.zeros(3, 2))
    assert torch.equal(same, x) and torch.equal(same_m, m)
    small, small_m = zoom_out(x, m, torch.full((3,), 0.5), torch.zeros(3, 2))
    area = (small_m > 127).sum(dim=(1, 2)).float()
    assert torch.allclose(area, torch.full((3,), 64.0), atol=8)  # 16x16 object -> 8x8
    assert (small_m[:, :8] == 0).all() and (small_m[:, :, -8:] == 0).all()  # the revealed border is not object
    moved, moved_m = zoom_out(x, m, torch.full((3,), 0.5), torch.tensor([[1.0, 1.0]] * 3))
    ys, xs = torch.nonzero(moved_m[0] > 127, as_tuple=True)
    assert xs.float().mean() > 20 and ys.float().mean() > 20  # shift 1 = towards the bottom-right edge


def test_packed_batches_paste_objects_on_scenes_and_keep_them():
    """Background augmentation in the training loader: at p = 1 and scale 1 every object pixel is
    the catalog's, every background pixel a scene's (not the catalog white)."""
    from gearsight.data.composite import prepare_backgrounds
    from gearsight.data.loader import Batches

    n, s = 8, 24
    images = torch.full((n, s, s, 3), 255, dtype=torch.uint8)
    images[:, 6:18, 6:18] = torch.tensor([200, 30, 30], dtype=torch.uint8)
    masks = torch.zeros(n, s, s, dtype=torch.uint8)
    masks[:, 6:18, 6:18] = 255
    scenes = prepare_backgrounds(np.full((2, 40, 40, 3), 7, np.uint8), s)
    b = Batches(images, torch.zeros(n, dtype=torch.long), batch_size=n, mean=[0.0] * 3, std=[1 / 255] * 3,
                augment=True, flip=True, translate=2, masks=masks, backgrounds=scenes, background_p=1.0,
                background_scale=(1.0, 1.0))
    x, _ = next(b.epoch(0))
    pixels = x.permute(0, 2, 3, 1).round().to(torch.uint8)
    red = (pixels == torch.tensor([200, 30, 30], dtype=torch.uint8)).all(dim=3)
    scene = (pixels == 7).all(dim=3)
    assert (red.sum(dim=(1, 2)) >= 100).all()  # the 12x12 object, shifted, minus a soft edge
    assert (red | scene).float().mean() > 0.95 and not (pixels == 255).all(dim=3).any()
    b.background_p = 0.0
    x0, _ = next(b.epoch(0))
    assert (x0.permute(0, 2, 3, 1).round() == 255).all(dim=3).any()  # off: catalog white stays


def test_outdoor_cli_and_background_training_end_to_end(tmp_path):
    """The demo's path in real subprocesses on tiny real files: pack the catalog photos, build and
    pack the outdoor set (`gearsight outdoor`), train with background augmentation from a scene pool,
    evaluate on both; the masks are cut once and cached in the pack."""
    from conftest import run_cli

    gear_csv, scenes = fake_sources(tmp_path, per_class=6)
    run_cli("pack", gear_csv, tmp_path / "gear32", "--size", "32", "--quiet", "--workers", "1")
    proc = run_cli("outdoor", gear_csv, tmp_path / "outdoor", "--pack", tmp_path / "outdoor32", "--size", "32",
                   "--scenes", scenes)
    assert "12 composites" in proc.stdout and (tmp_path / "outdoor32" / "meta.json").is_file()
    outdoor.build_background_pool(scenes, tmp_path / "pool.npy", side=48)
    proc = run_cli("train", tmp_path / "gear32", "--out", tmp_path / "run", "--epochs", "2", "--batch-size", "4",
                   "--widths", "8,8,8", "--background-p", "0.5", "--backgrounds", tmp_path / "pool.npy",
                   "--threads", "1", "--quiet")
    assert "cutting" in proc.stdout and (tmp_path / "gear32" / "masks.npy").is_file()
    for data in ("gear32", "outdoor32"):
        out = run_cli("evaluate", tmp_path / "run" / "model.safetensors", tmp_path / data, "--split", "test").stdout
        assert "accuracy" in out and "ECE" in out
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["background_p"] == 0.5 and cfg["backgrounds"] == str(tmp_path / "pool.npy")
