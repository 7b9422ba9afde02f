"""The one in-memory form of a detection dataset, whatever file format it came from.

Box policy, applied by every reader through :func:`check_boxes` (``strict=True`` turns each warning
into an error instead):
- a box partly outside the image is **clipped** to the image, with a warning naming the file and box;
- a box with no area (``x2 <= x1`` or ``y2 <= y1``, e.g. a point; BCCD has two) or entirely outside
  the image is **dropped, with a warning** naming the file and box: it cannot be learnt or matched;
- an image with no boxes is kept (a background image), with a warning, since it is often a mistake.
Problems that make a dataset unusable raise ValueError/FileNotFoundError naming the file: a missing
image file, malformed xml/json, an unknown class name, a missing size.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class AnnotationWarning(UserWarning):
    """A fixable annotation problem: the reader fixed it (clip/drop) and says so."""


@dataclass
class DetectionRecord:
    """One image and its boxes. ``labels`` index into the dataset's ``classes`` (0-based)."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float64 x1, y1, x2, y2 in pixels (float64: COCO export round-trips)
    labels: np.ndarray  # (N,) int64
    image_id: int = 0  # the source's id (COCO image id; VOC: position in the folder listing)
    iscrowd: np.ndarray | None = None  # (N,) bool: COCO crowd / VOC difficult, ignored by the metric
    areas: np.ndarray | None = None  # (N,) float: COCO segmentation areas, when the source has them

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.iscrowd is None:
            self.iscrowd = np.zeros(len(self.labels), dtype=bool)
        if self.areas is None:
            self.areas = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
        if not (len(self.boxes) == len(self.labels) == len(self.iscrowd) == len(self.areas)):
            raise ValueError(f"{self.image}: boxes, labels, iscrowd and areas differ in length")


@dataclass
class DetectionData:
    """Records plus class names; ``category_ids`` keeps the source's ids (COCO) for export/eval."""

    records: list[DetectionRecord]
    classes: list[str]
    category_ids: list[int] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)  # every warning the reader raised, in order

    def __post_init__(self):
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.classes) + 1))

    def subset(self, keep: list[DetectionRecord]) -> "DetectionData":
        return DetectionData(keep, self.classes, self.category_ids, self.issues)

    def box_counts(self) -> dict[str, int]:
        counts = np.bincount(np.concatenate([r.labels for r in self.records] or [np.zeros(0, int)]),
                             minlength=len(self.classes))
        return dict(zip(self.classes, map(int, counts)))


class IssueLog:
    """Collects annotation warnings (or raises them when strict) for one reader call."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.issues: list[str] = []

    def warn(self, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        self.issues.append(message)

    def emit(self) -> None:
        """One Python warning summarizing the lot, so a script sees it; the list stays on the data."""
        if self.issues:
            more = f" (and {len(self.issues) - 3} more)" if len(self.issues) > 3 else ""
            warnings.warn(f"{len(self.issues)} annotation issue(s): " + "; ".join(self.issues[:3]) + more,
                          AnnotationWarning, stacklevel=3)


def check_boxes(boxes: np.ndarray, width: int, height: int, where: str, log: IssueLog) -> np.ndarray:
    """Indices of the boxes to keep; clips partly-outside boxes in place (see the module policy)."""
    keep = []
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        shown = f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not np.all(np.isfinite(box)):
            log.warn(f"{where}: box {shown} is not finite; dropped")
            continue
        if x2 <= x1 or y2 <= y1:
            log.warn(f"{where}: box {shown} has no area; dropped")
            continue
        clipped = np.clip(box, 0, [width, height, width, height])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            log.warn(f"{where}: box {shown} lies outside the {width}x{height} image; dropped")
            continue
        if not np.array_equal(clipped, box):
            log.warn(f"{where}: box {shown} extends outside the {width}x{height} image; clipped")
            boxes[i] = clipped
        keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def require_image(image: Path, where: str) -> None:
    if not image.is_file():
        raise FileNotFoundError(f"{where}: image file not found: {image}")
