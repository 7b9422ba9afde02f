"""The map-file image deserializer on real files: path forms, zip members, bad images, workers."""
from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_dataset
from gearsight.cntk.dataset import MapFileDataset
from gearsight.cntk.mapfile import read_map_file
from gearsight.cntk.transforms import Crop, Mean, Pipeline, Scale, sample_rng, transforms_from_config
from gearsight.image.decode import DecodeError

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]  # label i -> colour i


def _png(colour, size=(20, 16)) -> bytes:
    """A PNG of ``colour`` with a small dark mark at the top-left, so flips and crops show."""
    rgb = np.full((size[1], size[0], 3), colour, np.uint8)
    rgb[:3, :3] = 10
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def mapped(tmp_path: Path) -> Path:
    """A map file using every path form, one corrupt image and one missing file."""
    (tmp_path / "images").mkdir()
    for label, colour in enumerate(COLOURS):
        (tmp_path / "images" / f"{label}.png").write_bytes(_png(colour, (20 + 4 * label, 16)))
    with zipfile.ZipFile(tmp_path / "images" / "pack.zip", "w") as zf:
        zf.writestr("chunk0/z2.png", _png(COLOURS[2]))
    (tmp_path / "images" / "broken.png").write_bytes(_png(COLOURS[1])[:60])  # truncated
    (tmp_path / "images" / "fake.zip").write_bytes(b"not a zip archive")
    lines = ["images/0.png\t0",                          # line 1: relative to the map file
             "key-1\timages/1.png\t1",                   # line 2: three columns
             f"{tmp_path}/images/2.png\t2",              # line 3: absolute
             ".../images/3.png\t3",                      # line 4: CNTK's ... = the map file's folder
             "",                                         # line 5: blank lines are allowed
             "images/pack.zip@/chunk0/z2.png\t2",        # line 6: inside a zip
             "images\\broken.png\t1",                    # line 7: Windows separator, corrupt image
             "images/missing.png\t0",                    # line 8: no such file
             "images/pack.zip@/chunk0/nope.png\t3",      # line 9: no such member
             "images/fake.zip@/a.png\t0"]                # line 10: not a zip file
    (tmp_path / "map.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "map.txt"


def _colour_labels(images: torch.Tensor) -> list[int]:
    """Which COLOURS entry each image (NCHW uint8) is, by its centre pixel."""
    centre = images[:, :, images.shape[2] // 2, images.shape[3] // 2].numpy().astype(int)
    return [int(np.abs(np.array(COLOURS) - px).sum(1).argmin()) for px in centre]


def test_minibatches_read_every_path_form_and_skip_and_report_bad_images(mapped):
    ds = MapFileDataset(mapped, transforms=[Scale(width=12, height=10)])
    assert len(ds) == 9
    with pytest.warns(UserWarning, match="skipped 4 undecodable"):
        batches = list(ds.minibatches(3))
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches]).tolist()
    assert images.shape == (5, 3, 10, 12) and images.dtype == torch.uint8
    assert labels == [0, 1, 2, 3, 2] == _colour_labels(images)
    assert [(s.line, s.index) for s in ds.skipped] == [(7, 5), (8, 6), (9, 7), (10, 8)]
    reasons = {s.line: s.reason for s in ds.skipped}
    assert "truncated" in reasons[7] or "corrupt" in reasons[7]
    assert reasons[8] == "file not found" and "no such member" in reasons[9] and "BadZipFile" in reasons[10]
    assert ds.skipped[2].source.endswith("pack.zip@chunk0/nope.png")
    with pytest.warns(UserWarning, match="skipped 4"):
        list(ds.minibatches(4, shuffle=True, epoch=1))  # a second pass lists each bad image once
    assert len(ds.skipped) == 4


def test_getitem_raises_naming_the_map_file_and_line(mapped):
    ds = MapFileDataset(mapped)
    image, label = ds[3]
    assert image.shape == (3, 16, 32) and label == 3  # no transforms: decoded size, CHW
    with pytest.raises(DecodeError, match=r"map.txt, line 8: .*missing.png: file not found"):
        ds[6]
    assert ds.entry(1).key == "key-1" and ds.entry(0).key == ""


@pytest.mark.parametrize("line,message", [
    ("images/0.png", r"line 2: expected path<TAB>label or key<TAB>path<TAB>label, got 1 tab-separated"),
    ("a\tb\tc\td", r"line 2: expected .* got 4 tab-separated"),
    ("images/0.png\tcat", r"line 2: label 'cat' is not a non-negative integer"),
    ("images/0.png\t-1", r"line 2: label '-1' is not a non-negative integer"),
    ("images/0.png\t9", r"line 2: label 9 is out of range for num_classes=4"),
    ("\t1", r"line 2: empty image path"),
])
def test_map_file_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad_map.txt"
    path.write_text(f"images/0.png\t0\n{line}\n")
    with pytest.raises(ValueError, match=rf"bad_map.txt, {message}"):
        read_map_file(path, num_classes=4)


def test_empty_map_file_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt: no entries"):
        MapFileDataset(tmp_path / "empty.txt")


def _augmenting() -> Pipeline:
    return Pipeline([Crop("RandomSide", side_ratio=(0.5, 1.0), jitter_type="uniratio"), Scale(width=8, height=8)])


def test_workers_give_the_same_shuffled_augmented_batches_as_the_main_process(mapped):
    ds = MapFileDataset(mapped, transforms=_augmenting())
    with pytest.warns(UserWarning):
        serial = list(ds.minibatches(2, shuffle=True, seed=3, workers=0, epoch=1))
    with pytest.warns(UserWarning):
        parallel = list(ds.minibatches(2, shuffle=True, seed=3, workers=2, epoch=1))
    assert len(serial) == len(parallel)
    for (xa, ya), (xb, yb) in zip(serial, parallel):
        assert xa.equal(xb) and ya.equal(yb)
    labels = torch.cat([y for _, y in serial]).tolist()
    assert sorted(labels) == [0, 1, 2, 2, 3] and labels == _colour_labels(torch.cat([x for x, _ in serial]))
    # each item's augmentation is sample_rng(seed, index, epoch): the same as a direct call
    ds.seed, ds.epoch = 3, 1
    order = torch.randperm(9, generator=torch.Generator().manual_seed(3 * 1_000_003 + 1)).tolist()
    first_good = next(i for i in order if i < 5)  # items 0-4 decode, 5-8 are the bad ones
    assert serial[0][0][0].equal(ds[first_good][0])


def test_order_and_augmentation_follow_seed_and_epoch(mapped):
    ds = MapFileDataset(mapped, transforms=_augmenting())
    with pytest.warns(UserWarning):
        def run(**kw):
            return [(x, y) for x, y in ds.minibatches(8, shuffle=True, **kw)][0]
        a, b, c = run(seed=1, epoch=0), run(seed=1, epoch=0), run(seed=1, epoch=1)
    assert a[0].equal(b[0]) and a[1].equal(b[1])
    assert not (a[0].shape == c[0].shape and a[0].equal(c[0]))


def test_mean_gives_float_batches_and_multiview_repeats_each_entry_ten_times(mapped):
    mean = Mean.from_array(np.full((8, 8, 3), 100.0, np.float32))
    ds = MapFileDataset(mapped, transforms=[Scale(width=8, height=8), mean])
    x, _ = next(ds.minibatches(2))  # the first batch: no bad image met yet
    assert x.dtype == torch.float32 and x.min() < 0
    views = MapFileDataset(mapped, transforms=[Crop("MultiView10", side_ratio=0.5), Scale(width=4, height=4)])
    assert len(views) == 90 and views.entry(13).line == 2
    assert [views[i][1] for i in (0, 9, 10)] == [0, 0, 1]
    assert not views[0][0].equal(views[5][0])  # view 5 is view 0 mirrored
    assert views[0][0].flip(2).equal(views[5][0])


def test_base64_map_file_decodes_and_reports_an_invalid_entry(tmp_path):
    good = base64.b64encode(_png(COLOURS[3])).decode()
    (tmp_path / "b64.txt").write_text(f"3\t{good}\nk1\t0\tnot*base64\nk2\t1\t{base64.b64encode(b'hello').decode()}\n")
    ds = MapFileDataset(tmp_path / "b64.txt", base64=True)
    with pytest.warns(UserWarning, match="skipped 2"):
        (x, y), = list(ds.minibatches(4))
    assert y.tolist() == [3] and _colour_labels(x) == [3]
    assert [(s.line, s.source) for s in ds.skipped] == [(2, "<base64>"), (3, "<base64>")]
    assert "invalid base64" in ds.skipped[0].reason and "not an image" in ds.skipped[1].reason


def test_cntk_corpus_maps_match_cntk_control_output():
    """ImageReaderSimple (plain files), ImageReaderZip (zip members), Base64ImageReaderSimple: the
    CNTK baselines list each image once (CHW, BGR) in randomized order, so compare as sets."""
    root = require_dataset("cntk") / "image"
    config = transforms_from_config(root / "config" / "ImageReaderSimple_Config.cntk", section="Simple_Test")
    control = sorted(tuple(float(v) for v in line.split()) for line in
                     (root / "control" / "ImageReaderSimple_Control.txt").read_text().splitlines() if line.strip())
    for name, b64 in [("ImageReaderSimple_map.txt", False), ("ImageReaderZip_map.txt", False),
                      ("Base64ImageReaderSimple_map.txt", True)]:
        ds = MapFileDataset(root / "data" / name, config, base64=b64, num_classes=4)
        (x, y), = list(ds.minibatches(4))
        ours = sorted(tuple(float(v) for v in img.numpy()[::-1].reshape(-1)) for img in x)
        assert ours == control, name
        assert y.tolist() == [0, 1, 2, 3] and not ds.skipped
    dots = MapFileDataset(root / "data" / "ImageReader3Dots_map.txt")
    assert [dots[i][1] for i in range(2)] == [0, 3]  # .../images/simple.zip@/... and .../images/red.jpg


def test_cntk_corpus_bad_maps_fail_naming_the_line():
    data = require_dataset("cntk") / "image" / "data"
    with pytest.raises(ValueError, match=r"ImageReaderBadMap_map.txt, line 3"):
        MapFileDataset(data / "ImageReaderBadMap_map.txt")
    with pytest.raises(ValueError, match=r"ImageReaderBadLabel_map.txt, line 2: label 'blah'"):
        MapFileDataset(data / "ImageReaderBadLabel_map.txt")
    with pytest.raises(ValueError, match=r"ImageReaderLabelOutOfRange_map.txt, line 4: label 10"):
        MapFileDataset(data / "ImageReaderLabelOutOfRange_map.txt", num_classes=4)


def test_sample_rng_is_what_items_use(mapped):
    ds = MapFileDataset(mapped, transforms=_augmenting(), seed=11)
    ds.epoch = 2
    expected = _augmenting()(ds.decode(1), sample_rng(11, 1, 2))
    assert ds[1][0].equal(expected)


def test_train_cli_reads_map_files_with_transforms_and_reports_a_bad_image(tmp_path):
    """`gearsight train train_map.txt --val val_map.txt --transforms ...`: CNTK's deserializer path,
    in a real subprocess, on real PNG files of two colour classes.

    48 steps, not 8: the classes are learnt in a few steps, but BatchNorm's running statistics (what
    validation uses) need ~30 steps at momentum 0.1; with 8, val accuracy was 0.5 for about half of
    the seeds in fp32 and bf16 alike (measured over 6 seeds each; 48 steps: best val >= 0.94 in all)."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for split, n in (("train", 64), ("val", 16)):
        for i in range(n):
            label = i % 2
            base = np.array([200, 40, 40] if label else [40, 40, 200])
            pixels = np.clip(base + rng.integers(-30, 30, (24, 28, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"{split}{i}.png")
            lines[split].append(f"{split}{i}.png\t{label}")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    lines["train"].append("broken.png\t1")
    for split in lines:
        (tmp_path / f"{split}_map.txt").write_text("\n".join(lines[split]) + "\n")
    transforms = ('transforms = ({type = "Crop"; cropType = "RandomSide"; sideRatio = 0.8:1.0} : '
                  '{type = "Scale"; width = 16; height = 16; channels = 3})')
    from conftest import run_cli

    proc = run_cli("train", tmp_path / "train_map.txt", "--val", tmp_path / "val_map.txt", "--transforms", transforms,
                   "--classes", "blue,red", "--out", tmp_path / "run", "--epochs", "6", "--batch-size", "8",
                   "--widths", "8,16,16", "--workers", "0", "--quiet")
    assert "train 65 / val 16 map-file images, 2 classes, 16px after transforms" in proc.stdout
    assert "skipped 1 undecodable image" in proc.stderr
    assert f"skipped {tmp_path / 'train_map.txt'}, line 65: {tmp_path / 'broken.png'}" in proc.stderr
    from gearsight.modelfile import read_spec

    spec = read_spec(tmp_path / "run" / "model.safetensors")
    assert spec.classes == ["blue", "red"] and spec.input_size == 16 and spec.extra["val_acc"] >= 0.9


def test_training_goes_on_past_an_unreadable_validation_image(tmp_path):
    """A bad image in the *val* map file used to stop training: the batches dropped it but the
    labels kept it, and evaluation failed on the shape mismatch (docs/MAPFILE.md: never stop)."""
    from conftest import run_cli

    for split, n in (("train", 32), ("val", 8)):
        lines = []
        for i in range(n):
            Image.open(io.BytesIO(_png(COLOURS[i % 2], (18, 18)))).save(tmp_path / f"{split}{i}.png")
            lines.append(f"{split}{i}.png\t{i % 2}")
        if split == "val":
            (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
            lines.insert(3, "bad.png\t1")
        (tmp_path / f"{split}_map.txt").write_text("\n".join(lines) + "\n")
    proc = run_cli("train", tmp_path / "train_map.txt", "--val", tmp_path / "val_map.txt", "--transforms",
                   'transforms = ({type = "Scale"; width = 16; height = 16; channels = 3})', "--out",
                   tmp_path / "run", "--epochs", "2", "--batch-size", "8", "--widths", "8,16,16",
                   "--workers", "0", "--quiet")
    assert f"skipped {tmp_path / 'val_map.txt'}, line 4: {tmp_path / 'bad.png'}" in proc.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_validation_without_its_own_transforms_drops_the_random_parts():
    """No --val-transforms: val images are judged through the train pipeline minus its randomness,
    not through random crops that change every epoch."""
    train = transforms_from_config(
        'transforms = ({type = "Crop"; cropType = "RandomSide"; sideRatio = 0.6:1.0; jitterType = "UniRatio"} : '
        '{type = "Scale"; width = 8; height = 8; channels = 3; interpolations = "cubic:linear"} : '
        '{type = "Color"; brightnessRadius = 0.2} : {type = "HFlip"})')
    val = train.for_evaluation()
    crop, scale = val.transforms
    assert (crop.crop_type, crop.side_ratio, crop.hflip) == ("center", (0.8, 0.8), False)
    assert (scale.width, scale.interpolations) == (8, ("cubic",))
    image = np.asarray(Image.open(io.BytesIO(_png(COLOURS[0], (40, 30)))))
    views = [val(image, rng) for rng in range(5)]
    assert all(torch.equal(views[0], v) for v in views[1:])  # the same whatever the draw
    assert not all(torch.equal(train(image, 0), train(image, rng)) for rng in range(1, 5))


def test_whitening_sample_is_a_seeded_random_draw_not_the_first_entries_and_is_decoded_once(tmp_path):
    """AirNet's whitening is fitted on MapFileBatches.images: on a map file in class order the first
    entries are all one class; a seeded random sample holds every class."""
    from gearsight.data.loader import MapFileBatches

    lines = []
    for label in range(2):  # class order: 40 of class 0, then 40 of class 1
        for i in range(40):
            path = tmp_path / f"c{label}_{i}.png"
            if not path.exists():
                path.write_bytes(_png(COLOURS[label], (12, 12)))
            lines.append(f"{path.name}\t{label}")
    (tmp_path / "map.txt").write_text("\n".join(lines) + "\n")
    ds = MapFileDataset(tmp_path / "map.txt", [Scale(width=12, height=12)])
    batches = MapFileBatches(ds, 8, [0.5] * 3, [0.25] * 3, seed=3)
    batches.init_sample = 10  # of 80: the first 10 would all be class 0
    batches.dataset.minibatches = _counting(ds.minibatches)
    first = batches.images
    assert batches.images is first and batches.dataset.minibatches.calls == 1  # cached
    assert set(_colour_labels(first.permute(0, 3, 1, 2))) == {0, 1}


def _counting(fn):
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)
    wrapper.calls = 0
    return wrapper
