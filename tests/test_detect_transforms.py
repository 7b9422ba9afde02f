"""Boxes follow the pixels: v2 flips, scale jitter + crop, and the model's own resize and back."""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from gearsight.detect.records import DetectionRecord
from gearsight.detect.transforms import DetectionDataset, load_sample, train_transforms


def _marked_image(h: int, w: int, box: list[int]) -> tuple[torch.Tensor, dict]:
    """A black image with one white rectangle exactly under ``box`` (x1, y1, x2, y2)."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    target = {"boxes": tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=(h, w)),
              "labels": torch.tensor([1])}
    return tv_tensors.Image(image), target


def _white_extent(image: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(image[0] > (127 if image.dtype == torch.uint8 else 0.5), as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_horizontal_and_vertical_flips_move_boxes_with_pixels():
    image, target = _marked_image(60, 100, [10, 5, 40, 25])
    for flip, expected in ((v2.RandomHorizontalFlip(p=1), [60, 5, 90, 25]), (v2.RandomVerticalFlip(p=1), [10, 35, 40, 55])):
        out_image, out_target = flip(image, target)
        assert out_target["boxes"].tolist() == [expected]
        assert _white_extent(out_image) == expected


def test_resize_scales_boxes_like_pixels():
    image, target = _marked_image(60, 100, [10, 6, 40, 26])
    out_image, out_target = v2.Resize((120, 200), antialias=False)(image, target)
    assert out_target["boxes"].tolist() == [[20, 12, 80, 52]]
    np.testing.assert_allclose(_white_extent(out_image), [20, 12, 80, 52], atol=1)


def test_training_pipeline_keeps_boxes_on_their_objects():
    torch.manual_seed(0)
    pipeline = train_transforms(min_size=64, max_size=96, crop=64, vflip=True, photometric=False)
    for _ in range(20):
        image, target = _marked_image(120, 160, [50, 40, 90, 80])
        out_image, out_target = pipeline(image, target)
        assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.float32
        if len(out_target["boxes"]) == 0:  # the crop missed the object: its box went too
            assert (out_image[0] > 0.5).sum() < 2 * 64
            continue
        box = out_target["boxes"][0].tolist()
        assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64
        if min(box[2] - box[0], box[3] - box[1]) < 4:
            continue  # a sliver at the crop edge: too thin to locate its pixels after antialiasing
        np.testing.assert_allclose(_white_extent(out_image), box, atol=1.5)


def test_model_resize_maps_predictions_back_to_image_pixels():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    transform = GeneralizedRCNNTransform(min_size=64, max_size=200, image_mean=[0, 0, 0], image_std=[1, 1, 1]).eval()
    image = torch.rand(3, 120, 160)
    boxes = torch.tensor([[16.0, 12.0, 80.0, 60.0]])
    batch, targets = transform([image], [{"boxes": boxes.clone(), "labels": torch.tensor([1])}])
    assert batch.image_sizes[0] == (64, 85)  # shorter side 120 -> 64
    np.testing.assert_allclose(targets[0]["boxes"].numpy(), boxes.numpy() * 64 / 120, rtol=1e-2)
    back = transform.postprocess([{"boxes": targets[0]["boxes"]}], batch.image_sizes, [(120, 160)])
    np.testing.assert_allclose(back[0]["boxes"].numpy(), boxes.numpy(), atol=0.5)


def test_dataset_drops_crowd_boxes_and_shifts_labels(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    rec = DetectionRecord(path, 40, 30, [[1, 1, 10, 10], [5, 5, 20, 20]], [0, 1], iscrowd=np.array([False, True]))
    image, target = load_sample(rec)
    assert target["labels"].tolist() == [1] and target["boxes"].tolist() == [[1, 1, 10, 10]]
    ds = DetectionDataset([rec], v2.ToDtype(torch.float32, scale=True), cache=True)
    out_image, out_target = ds[0]
    assert out_image.shape == (3, 30, 40) and ds.cache and out_target["boxes"].dtype == torch.float32
    wrong = DetectionRecord(path, 50, 30, [[1, 1, 10, 10]], [0])
    try:
        load_sample(wrong)
    except ValueError as exc:
        assert "image is 40x30 but its annotation says 50x30" in str(exc)
    else:
        raise AssertionError("a size mismatch must be an error")
