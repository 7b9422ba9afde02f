"""Box-aware augmentation (torchvision.transforms.v2) and the dataset that feeds Faster R-CNN.

Training samples are square crops of ``crop`` pixels taken from the image after a random rescale
around the network scale (scale jitter). A crop whose shorter side equals the model's ``min_size``
passes through the model's own resize unchanged, so the jitter survives; evaluation feeds the whole
image and lets the model resize it (and map boxes back to image pixels). Crops are also cheaper:
a 320x320 crop costs 3/4 of the 320x427 full frame, for nearly the same number of objects.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from gearsight.detect.records import DetectionRecord
from gearsight.image.decode import decode_image

PAD_FILL = 114  # grey for the padding added when a zoomed-out image is smaller than the crop


def train_transforms(min_size: int, max_size: int, crop: int, *, scale_range: tuple[float, float] = (0.75, 1.33),
                     vflip: bool = False, photometric: bool = True) -> v2.Compose:
    steps = [
        # ScaleJitter fits the image in (min_size, max_size) then rescales it by a factor in scale_range.
        v2.ScaleJitter(target_size=(min_size, max_size), scale_range=scale_range, antialias=True),
        v2.RandomCrop(crop, pad_if_needed=True, fill=PAD_FILL),
        v2.RandomHorizontalFlip(),
    ]
    if vflip:  # top/bottom has no meaning under a microscope; it does in street photos
        steps.append(v2.RandomVerticalFlip())
    if photometric:
        steps.append(v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.02))
    steps += [v2.SanitizeBoundingBoxes(min_size=2.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def load_sample(rec: DetectionRecord, image: torch.Tensor | None = None) -> tuple[tv_tensors.Image, dict]:
    """The record's image (uint8 CHW) and its torchvision target; labels are shifted by one (0 = background)."""
    if image is None:
        image = torch.from_numpy(decode_image(rec.image)).permute(2, 0, 1)
    if tuple(image.shape[1:]) != (rec.height, rec.width):
        raise ValueError(f"{rec.image}: image is {image.shape[2]}x{image.shape[1]} but its annotation "
                         f"says {rec.width}x{rec.height}")
    keep = torch.from_numpy(~rec.iscrowd)  # crowd/difficult boxes are not learnt (nor penalized by COCOeval)
    boxes = tv_tensors.BoundingBoxes(torch.from_numpy(rec.boxes).float()[keep], format="XYXY",
                                     canvas_size=(rec.height, rec.width))
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.from_numpy(rec.labels)[keep] + 1}


class DetectionDataset(torch.utils.data.Dataset):
    """Records -> (float image, target); decoded images are kept in memory when ``cache`` (small sets)."""

    def __init__(self, records: list[DetectionRecord], transform: v2.Transform, cache: bool = False):
        self.records = records
        self.transform = transform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        pixels = self.cache.get(i) if self.cache is not None else None
        image, target = load_sample(rec, pixels)
        if self.cache is not None:
            self.cache[i] = image.as_subclass(torch.Tensor)
        image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def collate(batch):
    return tuple(zip(*batch))
