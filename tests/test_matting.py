"""gear_mask on real image files: a product on a white studio background, an RGBA cut-out, white
inside the object, background seen through a hole; decode_rgba against decode_image."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from gearsight.data.matting import (cutout, decode_rgba, flatten_on_white, gear_mask, is_cutout_alpha, mask_square,
                                    masks_for_pack)
from gearsight.image.decode import DecodeError, decode_image
from imagefactory import make_bad_images, make_good_images

from conftest import require_dataset


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def studio_photo(path, size=(240, 200), quality=90):
    """A dark-blue boot-like blob with a white label inside, on near-white with JPEG noise; returns
    (path, true object mask, label mask)."""
    w, h = size
    obj = Image.new("L", size, 0)
    d = ImageDraw.Draw(obj)
    d.ellipse((40, 30, 190, 170), fill=255)
    d.rectangle((150, 100, 215, 170), fill=255)
    label = Image.new("L", size, 0)
    ImageDraw.Draw(label).rectangle((90, 80, 130, 110), fill=255)
    rng = np.random.default_rng(0)
    bg = np.clip(252 + rng.normal(0, 1.5, (h, w, 3)), 0, 255).astype(np.uint8)  # not quite 255, as scanned
    fg = np.zeros((h, w, 3), np.uint8) + np.array([30, 50, 120], np.uint8)
    fg = np.clip(fg.astype(int) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    m = np.asarray(obj.filter(ImageFilter.GaussianBlur(0.8)), np.float32)[..., None] / 255  # anti-aliased edge
    img = (fg * m + bg * (1 - m)).astype(np.uint8)
    lab = np.asarray(label) > 0
    img[lab] = 250  # a white label printed on the boot: white, but inside the object
    Image.fromarray(img).save(path, quality=quality)
    return path, np.asarray(obj) > 0, lab


def test_studio_photo_gets_the_object(tmp_path):
    path, truth, _ = studio_photo(tmp_path / "boot.jpg")
    mask = gear_mask(decode_image(path))
    assert mask.dtype == np.uint8 and mask.shape == truth.shape
    assert iou(mask >= 128, truth) > 0.95
    assert mask[0, 0] == 0 and mask[100, 100] == 255


def test_white_inside_the_object_stays(tmp_path):
    path, truth, label = studio_photo(tmp_path / "boot.jpg")
    rgb = decode_image(path)
    assert (rgb[label].min(axis=1) >= 240).mean() > 0.9  # the label really is near-white
    mask = gear_mask(rgb)
    assert (mask[label] >= 128).mean() > 0.99


def test_background_seen_through_a_hole_is_removed():
    # A grey ring (a carabiner, seen flat) on pure white: the white inside is the studio, not the product.
    im = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(im).ellipse((30, 30, 170, 170), outline=(90, 90, 100), width=16)
    rgb = np.asarray(im)
    mask = gear_mask(rgb)
    assert mask[100, 100] == 0 and mask[100, 38] == 255
    assert gear_mask(rgb, holes=False)[100, 100] == 255  # the plain flood fill keeps it


def test_rgba_file_uses_its_alpha(tmp_path):
    # The alpha is the truth even where the colour is white: a white glove cut out by the catalogue.
    h, w = 120, 160
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = 255
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - 60) / 45) ** 2 + ((xx - 80) / 60) ** 2 <= 1
    rgba[..., 3] = np.where(inside, 255, 0)
    rgba[50:60, 70:90, :3] = 20  # a dark logo
    Image.fromarray(rgba, "RGBA").save(tmp_path / "glove.png")
    decoded = decode_rgba(tmp_path / "glove.png")
    assert decoded.shape == (h, w, 4) and is_cutout_alpha(decoded[..., 3])
    np.testing.assert_array_equal(gear_mask(decoded), rgba[..., 3])
    rgb, mask = cutout(tmp_path / "glove.png")
    np.testing.assert_array_equal(mask, rgba[..., 3])
    assert (rgb[~inside] == 255).all() and (rgb[55, 80] == 20).all()


def test_photo_on_a_transparent_canvas_is_flood_filled(tmp_path):
    # Alpha that is only a rectangle (a white-background photo on a transparent canvas): not a matte.
    im = Image.new("RGBA", (320, 240), (0, 0, 0, 0))
    im.paste(Image.new("RGBA", (240, 240), (255, 255, 255, 255)), (40, 0))
    ImageDraw.Draw(im).rectangle((70, 40, 250, 200), fill=(200, 40, 40, 255))
    im.save(tmp_path / "canvas.png")
    rgba = decode_rgba(tmp_path / "canvas.png")
    assert not is_cutout_alpha(rgba[..., 3])
    mask = gear_mask(rgba)
    truth = np.zeros((240, 320), bool)
    truth[40:201, 70:251] = True
    assert iou(mask >= 128, truth) > 0.95 and mask[:, :40].max() == 0


def test_decode_rgba_matches_decode_image_on_every_good_file(tmp_path):
    for name, (path, _) in make_good_images(tmp_path).items():
        rgba = decode_rgba(path)
        assert rgba.dtype == np.uint8 and rgba.ndim == 3 and rgba.shape[2] == 4, name
        diff = np.abs(flatten_on_white(rgba).astype(int) - decode_image(path).astype(int)).max()
        assert diff <= 1, f"{name}: flattened RGBA differs from decode_image by {diff}"


def test_decode_rgba_refuses_bad_files_like_decode_image(tmp_path):
    for name, (path, expect) in make_bad_images(tmp_path).items():
        with pytest.raises(DecodeError) as info:
            decode_rgba(path)
        assert expect.error in info.value.reason, name


def test_edge_cases_of_the_rule():
    assert gear_mask(np.full((20, 30, 3), 255, np.uint8)).max() == 0        # nothing but background
    assert gear_mask(np.full((20, 30, 3), 40, np.uint8)).min() == 255       # no white anywhere: all object
    with pytest.raises(ValueError):
        gear_mask(np.zeros((5, 5), np.uint8))


def test_mask_square_follows_the_pack_geometry():
    mask = np.zeros((50, 100), np.uint8)
    mask[10:40, 20:80] = 255
    sq = mask_square(mask, 32)
    assert sq.shape == (32, 32) and sq[:8].max() == 0 and sq[-8:].max() == 0  # padded rows are background
    assert sq[16, 16] == 255


def test_masks_for_a_packed_folder(tmp_path):
    from gearsight.workflow import pack_source

    src = tmp_path / "src"
    (src / "boots").mkdir(parents=True)
    paths = [studio_photo(src / "boots" / f"b{i}.jpg")[0] for i in range(2)]
    with open(src / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows([(p.relative_to(src).as_posix(), "boots", "train") for p in paths])
    pack_source(src / "split.csv", tmp_path / "packed", size=32, progress=False, workers=1)
    masks = masks_for_pack(tmp_path / "packed")
    assert masks.shape == (2, 32, 32) and masks.dtype == np.uint8
    assert masks[:, 16, 16].min() == 255 and masks[:, 0, 0].max() == 0


def test_real_gear_photos_get_plausible_masks():
    gear = require_dataset("gear")
    with open(gear / "split.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"][::60]
    for r in rows:
        _, mask = cutout(gear / r["path"])
        cover = (mask >= 128).mean()
        assert 0.05 <= cover <= 0.95, f"{r['path']}: mask covers {cover:.1%} of the frame"
