"""CNTK-named transforms: each parameter on real images, determinism, and every config in the corpus."""
from __future__ import annotations

import colorsys
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_dataset
from gearsight.cntk.transforms import (Color, Crop, HFlip, Intensity, Mean, Pipeline, Scale, find_pipelines,
                                       read_mean_file, sample_rng, transform_batch, transforms_from_config)
from gearsight.image.decode import decode_image


def _coords_image(tmp_path: Path, h: int = 48, w: int = 64) -> np.ndarray:
    """A real PNG whose pixel (y, x) is (y, x, 200): any crop tells where it came from."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([yy, xx, np.full_like(yy, 200)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "coords.png")
    return decode_image(tmp_path / "coords.png")


def _photo(tmp_path: Path, h: int = 48, w: int = 64) -> np.ndarray:
    """A real JPEG with smooth colour gradients and a few hard edges, values away from 0 and 255."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([60 + 120 * xx, 70 + 100 * yy, 150 - 60 * xx * yy], axis=-1)
    rgb[h // 4: h // 2, w // 4: w // 2] = (200, 60, 40)
    Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / "photo.jpg", quality=95)
    return decode_image(tmp_path / "photo.jpg")


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _origin(crop: np.ndarray, src: np.ndarray) -> tuple[int, int, bool]:
    """(top, left, flipped) of a crop of a coords image, checked pixel for pixel."""
    flipped = crop.shape[1] > 1 and crop[0, 0, 1] > crop[0, 1, 1]
    top, left = int(crop[0, -1 if flipped else 0, 0]), int(crop[0, -1 if flipped else 0, 1])
    window = src[top:top + crop.shape[0], left:left + crop.shape[1]]
    np.testing.assert_array_equal(crop[:, ::-1] if flipped else crop, window)
    return top, left, flipped


# -- Crop ---------------------------------------------------------------------------------------------

def test_center_crop_is_the_exact_centre_square_of_side_ratio_times_short_side(tmp_path):
    img = _coords_image(tmp_path)
    out = _hwc(Crop("Center", side_ratio=0.5)(img, rng=0))
    assert out.shape == (24, 24, 3)
    assert _origin(out, img) == ((48 - 24) // 2, (64 - 24) // 2, False)
    exact = _hwc(Crop(crop_size=(10, 6))(img))  # width:height, centred
    assert exact.shape == (6, 10, 3) and _origin(exact, img) == (21, 27, False)
    assert Crop()(img).shape == (3, 48, 64)  # no ratio: the whole image, as CNTK


def test_random_side_crop_sizes_stay_in_the_side_ratio_range_and_jitter_only_with_uniratio(tmp_path):
    img = _coords_image(tmp_path)
    crop = Crop("RandomSide", side_ratio=(0.5, 1.0), jitter_type="UniRatio", hflip=False)
    sides, origins = set(), set()
    for seed in range(60):
        out = _hwc(crop(img, rng=seed))
        assert out.shape[0] == out.shape[1] and 24 <= out.shape[0] <= 48
        sides.add(out.shape[0])
        origins.add(_origin(out, img)[:2])
    assert len(sides) > 10 and len(origins) > 30
    fixed = Crop("RandomSide", side_ratio=(0.5, 1.0), jitter_type="None")  # None takes the min
    assert {fixed(img, rng=s).shape[1] for s in range(10)} == {24}


def test_random_area_crop_keeps_area_and_aspect_in_range_and_falls_back_to_the_whole_image(tmp_path):
    img = _coords_image(tmp_path)
    crop = Crop("RandomArea", area_ratio="0.25:0.5", aspect_ratio="0.75:1.3333", jitter_type="uniRatio")
    aspects = []
    for seed in range(60):
        out = _hwc(crop(img, rng=seed))
        h, w = out.shape[:2]
        assert 0.25 * 0.9 <= h * w / (48 * 64) <= 0.5 * 1.02
        aspects.append(w / h)
        _origin(out, img)
    assert 0.7 < min(aspects) < 0.95 and 1.05 < max(aspects) < 1.4
    too_big = Crop("RandomArea", area_ratio=1.0, aspect_ratio=0.5, jitter_type="uniratio")
    assert too_big(img, rng=0).shape == (3, 48, 64)  # 10 tries that do not fit -> the whole image


def test_random_crops_flip_half_the_time_by_default_and_never_when_told(tmp_path):
    img = _coords_image(tmp_path)
    flips = [_origin(_hwc(Crop("RandomSide", side_ratio=0.8)(img, rng=s)), img)[2] for s in range(100)]
    assert 30 < sum(flips) < 70
    assert not any(_origin(_hwc(Crop("RandomSide", side_ratio=0.8, hflip=False)(img, rng=s)), img)[2]
                   for s in range(20))
    assert not any(_origin(_hwc(Crop("Center", side_ratio=0.8)(img, rng=s)), img)[2] for s in range(20))


def test_multiview10_matches_cntk_control_output():
    root = require_dataset("cntk") / "image"
    pipeline = transforms_from_config(root / "config" / "ImageReaderMultiView_Config.cntk")
    img = decode_image(root / "data" / "images" / "multi.png")
    # CNTK's baseline: one line per view, CHW with channels in BGR order.
    control = [np.array(line.split(), float) for line in (root / "control" / "ImageReaderMultiView_Control.txt")
               .read_text().splitlines() if line.strip()]
    assert pipeline.copies == 10
    ours = [pipeline(img, rng=0, view=v).numpy()[::-1].reshape(-1) for v in range(10)]
    np.testing.assert_array_equal(np.array(ours), np.array(control))


# -- Scale --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,pil", [("linear", Image.BILINEAR), ("cubic", Image.BICUBIC),
                                      ("lanczos", Image.LANCZOS), ("nearest", Image.NEAREST)])
def test_scale_resizes_to_width_height_with_each_interpolation(tmp_path, name, pil):
    img = _photo(tmp_path)
    out = _hwc(Scale(width=20, height=15, interpolations=name)(img))
    assert out.shape == (15, 20, 3) and out.dtype == np.uint8
    reference = np.asarray(Image.fromarray(img).resize((20, 15), pil)).astype(int)
    if name == "nearest":  # sample positions differ by up to one source pixel between libraries
        assert np.abs(out.astype(int) - reference).mean() < 12
    else:  # torchvision's antialiased kernels are PIL's
        assert np.abs(out.astype(int) - reference).max() <= 2


def test_interpolations_differ_and_a_list_picks_one_per_image(tmp_path):
    img = _photo(tmp_path)
    outs = {n: Scale(width=23, height=17, interpolations=n)(img) for n in ("nearest", "linear", "cubic", "lanczos")}
    assert len({o.numpy().tobytes() for o in outs.values()}) == 4
    mixed = Scale(width=23, height=17, interpolations="nearest:lanczos")
    picks = {mixed(img, rng=s).numpy().tobytes() for s in range(20)}
    assert picks == {outs["nearest"].numpy().tobytes(), outs["lanczos"].numpy().tobytes()}


def test_scale_modes_fill_crop_and_pad(tmp_path):
    img = _photo(tmp_path)  # 48 x 64
    assert Scale(width=32, height=32, scale_mode="fill")(img).shape == (3, 32, 32)
    cropped = _hwc(Scale(width=32, height=32, scale_mode="crop")(img))
    covered = _hwc(Scale(width=43, height=32)(img))  # 64 x 48 -> 43 x 32 keeps the aspect ratio
    np.testing.assert_array_equal(cropped, covered[:, 5:37])
    padded = _hwc(Scale(width=32, height=32, scale_mode="pad", pad_value=114)(img))
    inner = _hwc(Scale(width=32, height=24)(img))
    assert (padded[:4] == 114).all() and (padded[28:] == 114).all()
    np.testing.assert_array_equal(padded[4:28], inner)
    edge = _hwc(Scale(width=32, height=32, scale_mode="pad")(img))  # padValue -1: repeat the border
    np.testing.assert_array_equal(edge[:4], np.repeat(inner[:1], 4, axis=0))


def test_scale_channels_1_is_rounded_luma_and_3_expands_grey(tmp_path):
    grey = np.full((6, 6, 3), 100, np.uint8)
    grey[:, 3:] = 255
    out = Scale(width=6, height=6, channels=1)(grey)
    assert out.shape == (1, 6, 6) and set(out.unique().tolist()) == {100, 255}
    assert Scale(width=4, height=4, channels=3)(np.zeros((4, 4, 1), np.uint8)).shape == (3, 4, 4)


# -- Mean, Intensity ----------------------------------------------------------------------------------

def _write_mean_xml(path: Path, values: np.ndarray, channels: int, rows: int, cols: int) -> Path:
    data = " ".join(f"{v:e}" for v in values.ravel())
    path.write_text(f'<?xml version="1.0" ?>\n<opencv_storage>\n<Channel>{channels}</Channel><Row>{rows}</Row>'
                    f'<Col>{cols}</Col>\n<MeanImg type_id="opencv-matrix"><rows>1</rows><cols>{values.size}</cols>'
                    f"<dt>f</dt><data>{data}</data></MeanImg>\n</opencv_storage>\n")
    return path


def test_mean_subtracts_the_real_cifar10_mean_image():
    xml = require_dataset("cntk") / "image" / "mean" / "CIFAR-10_mean.xml"
    mean = read_mean_file(xml)  # written planar RGB by CNTK's CIFAR script: "auto" must see that
    np.testing.assert_allclose(mean.reshape(-1, 3).mean(0), [125.31, 122.95, 113.87], atol=0.01)
    assert not np.allclose(read_mean_file(xml, "hwc-bgr"), mean)  # how CNTK read it: scrambled
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = Mean(mean_file=xml)(img)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(_hwc(out), img - mean, atol=1e-4)
    with pytest.raises(ValueError, match="CIFAR-10_mean.xml.*Scale"):
        Mean(mean_file=xml)(np.zeros((24, 32, 3), np.uint8))


def test_mean_file_written_here_in_either_layout(tmp_path):
    yy, xx = np.mgrid[0:6, 0:5]
    rgb = np.stack([100 + yy + xx, 60 + 2 * yy, 20 + xx], axis=-1).astype(np.float32)  # smooth, distinct channels
    interleaved = _write_mean_xml(tmp_path / "bgr.xml", rgb[..., ::-1], 3, 6, 5)  # OpenCV: HWC, BGR
    planar = _write_mean_xml(tmp_path / "planar.xml", rgb.transpose(2, 0, 1), 3, 6, 5)
    np.testing.assert_array_equal(read_mean_file(interleaved), rgb)
    np.testing.assert_array_equal(read_mean_file(planar), rgb)
    np.testing.assert_array_equal(read_mean_file(planar, "chw-rgb"), rgb)
    img = np.full((6, 5, 3), 150, np.uint8)
    np.testing.assert_array_equal(_hwc(Mean(mean_file=interleaved)(img)), 150 - rgb)
    np.testing.assert_array_equal(_hwc(Mean.from_array(rgb)(img)), 150 - rgb)
    assert Mean()(img).dtype == torch.uint8  # no meanFile: nothing to do, as in CNTK
    with pytest.raises(ValueError, match="bad.xml.*does not match"):
        Mean(mean_file=_write_mean_xml(tmp_path / "bad.xml", rgb, 3, 6, 6))


def test_intensity_adds_one_pca_shift_per_image(tmp_path):
    xml = tmp_path / "intensity.xml"
    xml.write_text('<?xml version="1.0"?><opencv_storage>'
                   '<EigVal type_id="opencv-matrix"><rows>1</rows><cols>3</cols><dt>f</dt><data>20 5 1</data></EigVal>'
                   '<EigVec type_id="opencv-matrix"><rows>3</rows><cols>3</cols><dt>f</dt>'
                   '<data>1 0 0 0 1 0 0 0 1</data></EigVec></opencv_storage>')
    img = np.full((4, 4, 3), 128.0, np.float32)
    shifts = [_hwc(Intensity(intensity_file=xml, intensity_std_dev=0.5)(img, rng=s)) - 128 for s in range(30)]
    assert all(np.ptp(s.reshape(-1, 3), axis=0).max() < 1e-4 for s in shifts)  # one shift for every pixel
    per_channel = np.array([s[0, 0] for s in shifts]).std(0)
    assert per_channel[0] > per_channel[1] > per_channel[2] > 0  # scaled by the eigenvalues
    assert Intensity(intensity_file=xml)(img).equal(torch.from_numpy(img).permute(2, 0, 1))  # stdDev 0: off


# -- Color, HFlip -------------------------------------------------------------------------------------

def test_brightness_shift_and_contrast_factor_stay_within_their_radius(tmp_path):
    img = _photo(tmp_path).astype(np.float32)
    mean = img.mean()
    betas = [(_hwc(Color(brightness_radius=0.2)(img, rng=s)) - img).mean() for s in range(40)]
    assert all(abs(b) <= 0.2 * mean + 1e-3 for b in betas) and np.ptp(betas) > 0.2 * mean
    alphas, img = [], img * 0.9  # <= 180: x 1.3 does not clip
    for seed in range(40):
        out = _hwc(Color(contrast_radius=0.3)(img, rng=seed))
        alphas.append(float(out.sum() / img.sum()))
        np.testing.assert_allclose(out, img * alphas[-1], rtol=1e-5)
    assert 0.7 - 1e-6 <= min(alphas) < 0.85 and 1.15 < max(alphas) <= 1.3 + 1e-6


def test_saturation_scales_hsv_s_within_radius_keeping_hue_and_value(tmp_path):
    img = _photo(tmp_path).astype(np.float32)
    before = [colorsys.rgb_to_hsv(*(img[y, x] / 255)) for y, x in [(5, 5), (20, 40), (40, 60), (15, 20)]]
    ratios = []
    for seed in range(30):
        out = _hwc(Color(saturation_radius=0.4)(img, rng=seed))
        after = [colorsys.rgb_to_hsv(*(out[y, x] / 255)) for y, x in [(5, 5), (20, 40), (40, 60), (15, 20)]]
        for (h0, s0, v0), (h1, s1, v1) in zip(before, after):
            assert abs(h0 - h1) < 1e-4 and abs(v0 - v1) < 1e-4
        ratio = after[0][1] / before[0][1]
        assert all(abs(s1 - min(1.0, s0 * ratio)) < 1e-4 for (_, s0, _), (_, s1, _) in zip(before, after))
        ratios.append(ratio)
    assert 0.6 - 1e-5 <= min(ratios) < 0.75 and 1.25 < max(ratios) <= 1.4 + 1e-5


def test_hflip_probability(tmp_path):
    img = _coords_image(tmp_path)
    mirrored = np.ascontiguousarray(img[:, ::-1])
    assert all(np.array_equal(_hwc(HFlip(1.0)(img, rng=s)), mirrored) for s in range(5))
    assert all(np.array_equal(_hwc(HFlip(0.0)(img, rng=s)), img) for s in range(5))
    assert 30 < sum(np.array_equal(_hwc(HFlip()(img, rng=s)), mirrored) for s in range(100)) < 70


# -- Pipelines: dtype, determinism, packed arrays -----------------------------------------------------

def _augment() -> Pipeline:
    return Pipeline([Crop("RandomSide", side_ratio=(0.6, 1.0), jitter_type="uniratio"), Scale(width=24, height=24),
                     Color(0.2, 0.2, 0.3)])


def test_pipeline_keeps_uint8_accepts_numpy_or_tensor_and_is_a_function_of_seed_and_index(tmp_path):
    img = _photo(tmp_path)
    pipe = _augment()
    a, b = pipe(img, sample_rng(7, 3)), pipe(torch.from_numpy(img), sample_rng(7, 3))
    assert a.dtype == torch.uint8 and a.shape == (3, 24, 24) and a.equal(b)
    assert not a.equal(pipe(img, sample_rng(7, 4))) and not a.equal(pipe(img, sample_rng(8, 3)))
    assert not a.equal(pipe(img, sample_rng(7, 3, epoch=1)))


def test_transform_batch_on_a_packed_style_array_equals_per_image_calls(tmp_path):
    images = np.stack([_photo(tmp_path), _photo(tmp_path)[::-1].copy()])
    images.setflags(write=False)  # like np.load(..., mmap_mode="r")
    batch = transform_batch(_augment(), images, seed=5, epoch=2, indices=[10, 11])
    assert batch.shape == (2, 3, 24, 24)
    assert batch[1].equal(_augment()(images[1], sample_rng(5, 11, epoch=2)))
    with pytest.raises(ValueError, match="add a Scale"):
        transform_batch(Pipeline(), [images[0], images[0][:40]])


# -- Config -------------------------------------------------------------------------------------------

BRIEF_EXAMPLE = """transforms = [
    { type = "Crop" ; cropType = "RandomSide" ; sideRatio = 0.8:1.0 ; jitterType = "UniRatio" } :
    { type = "Scale" ; width = 32 ; height = 32 ; channels = 3 ; interpolations = "linear" } :
    { type = "Mean" ; meanFile = "CIFAR-10_mean.xml" } ]"""

# Pipelines per corpus config file, by dotted path, with the transform types each holds.
CORPUS_PIPELINES = {
    "ImageAndTextReaderSimple_Config.cntk": {"Simple_Test.reader.deserializers[1].input.features":
                                             ["Crop", "Scale", "Mean", "Transpose"]},
    "ImageReaderColorTransform_Config.cntk": {"ColorTransform_Test.reader.features": ["Crop", "Scale", "Color"]},
    "ImageReaderIntensityTransform_Config.cntk": {"IntensityTransform_Test.reader.features":
                                                  ["Crop", "Scale", "Intensity"]},
    "ImageReaderMultiView_Config.cntk": {"MultiView_Test.reader.features": ["Crop", "Scale"]},
    "ImageTransforms_Config.cntk": {
        "SameShapeEmptyTransforms_Test.reader.deserializers[0].input.features": [],
        "DifferentShapeEmptyTransforms_Test.reader.deserializers[0].input.features": [],
        "NoScaleTransforms_Test.reader.deserializers[0].input.features": ["Mean", "Transpose"]},
}


def test_every_config_in_the_corpus_parses_and_builds():
    root = require_dataset("cntk") / "image"
    configs = sorted((root / "config").glob("*.cntk"))
    assert len(configs) == 14
    built = 0
    for path in configs:
        found = find_pipelines(path.read_text(), source=str(path))
        assert found, path.name
        if path.name in CORPUS_PIPELINES:
            assert {k: [t["type"] for t in v] for k, v in found.items()} == CORPUS_PIPELINES[path.name]
        for name in found:
            pipeline = transforms_from_config(path, section=name, base_dir=root / "mean")
            assert [t.cntk_type for t in pipeline.transforms] == [t["type"] for t in found[name]]
            built += 1
    assert built == 22
    deserializers = transforms_from_config(root / "config" / "ImageDeserializers.cntk", section="features2")
    assert [t.cntk_type for t in deserializers.transforms] == ["Scale", "Mean", "Transpose"]
    intensity = transforms_from_config(root / "config" / "ImageReaderIntensityTransform_Config.cntk",
                                       base_dir=root / "mean").transforms[-1]
    assert intensity.intensity_std_dev == 0.1 and intensity.eig_val[0] == pytest.approx(0.2175)


def test_the_excerpted_example_configs_parse_and_name_what_is_missing():
    root = require_dataset("cntk") / "image"
    text = (root / "config" / "example_reader_blocks_EXCERPT.txt").read_text()
    with pytest.raises(ValueError, match=r"line \d+: '\{' opened at line \d+ is not closed"):
        find_pipelines(text)  # verbatim excerpts: a block is cut off
    variables = {"ImageW": 224, "ImageH": 224, "ImageC": 3, "NumLabels": 1000, "MeanDir": str(root / "mean")}
    types = {}
    for chunk in re.split(r"(?m)^# ---- .*$", text)[1:]:
        stack = [c for c in re.sub(r"#[^\n]*", "", chunk) if c in "{[()]}"]
        opened = []
        for c in stack:
            opened.pop() if c in ")]}" else opened.append(c)
        closed = chunk + "".join({"{": "}", "[": "]", "(": ")"}[c] for c in reversed(opened))
        for name, specs in find_pipelines(closed, variables).items():
            types[name] = [s["type"] for s in specs]
            if any(s.get("meanFile") for s in specs):  # ImageNet1K_mean.xml is not in the corpus
                with pytest.raises(FileNotFoundError, match="ImageNet1K_mean.xml"):
                    transforms_from_config(closed, section=name, variables=variables)
            else:
                transforms_from_config(closed, section=name, variables=variables)
    assert types["reader.features"] == ["Crop", "Scale", "Color", "Mean"]  # ResNet50: legacy ImageReader
    assert types["reader.deserializers[2].input.features"] == ["Scale", "Transpose"]  # Fast R-CNN pad
    crop = transforms_from_config(closed, section="reader.deserializers[2]", variables=variables)
    assert crop.transforms[0].scale_mode == "pad" and crop.transforms[0].pad_value == 114


def test_brief_example_and_dicts_build_the_same_pipeline(tmp_path):
    xml = tmp_path / "CIFAR-10_mean.xml"
    _write_mean_xml(xml, np.full(32 * 32 * 3, 120.0), 3, 32, 32)
    from_text = transforms_from_config(BRIEF_EXAMPLE, base_dir=tmp_path)
    from_dicts = transforms_from_config([
        {"type": "Crop", "cropType": "RandomSide", "sideRatio": (0.8, 1.0), "jitter_type": "UniRatio"},
        {"type": "scale", "width": 32, "height": "32", "interpolations": "linear"},
        Mean(mean_file=xml)])
    img = _photo(tmp_path)
    assert from_text(img, rng=3).equal(from_dicts(img, rng=3))
    assert from_text.transforms[0].side_ratio == (0.8, 1.0) and from_text.transforms[0].hflip


@pytest.mark.parametrize("config,message", [
    ('transforms = ( { type = "Crop" ; sideRatoi = 0.5 } )', r"transform 1: Crop: unknown key 'sideRatoi'"),
    ('transforms = ( { type = "Crop" } : { type = "Rotate" } )',
     r"transform 2: unknown transform type 'Rotate' \(key 'type'\)"),
    ('transforms = ( { type = "Crop" ; cropType = "Diagonal" } )', r"cropType must be one of"),
    ('transforms = ( { type = "Crop" ; sideRatio = 1.5 } )', r"sideRatio must be in \(0, 1\]"),
    ('transforms = ( { type = "Scale" ; height = 8 } )', r"Scale: missing required key 'width'"),
    ('transforms = ( { type = "Scale" ; width = $W$ ; height = 8 } )',
     r"width must be an integer.*unresolved config variable"),
    ('transforms = ( { type = "Color" ; brightnessRadius = 2 } )', r"brightnessRadius must be in \[0, 1\]"),
    ('transforms = ( { sideRatio = 0.5 } )', r"no 'type' key"),
    ('a = [ width = 4 ; height = 4 ; flipIt = true ]', r"a: unknown key 'flipIt' in an ImageReader features block"),
    ('transforms = (\n { type = "Crop" \n\n', r"line 2: '\{' opened at line 2 is not closed"),
    ('x = [ transforms = () ]\ny = [ transforms = () ]', r"several transform lists.*'x'; 'y'"),
])
def test_config_errors_name_the_key_or_line(config, message):
    with pytest.raises(ValueError, match=message):
        transforms_from_config(config)
