"""Test-time augmentation levels on a trained model: accuracy on packed test splits, one row per level.

    .venv/bin/python bench/bench_tta.py RUN/model.safetensors work/gear144 work/outdoor144 [--shifts 0,6,12]

Levels: no TTA; flips (image + mirror, what evaluate uses); flips + two shifted copies of +-N px
(airbench's level 2, gearsight/tta.py). Accuracy only: the question is whether a costlier level
changes any prediction, for the same weights.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from gearsight.data.pack import PackedDataset
from gearsight.data.transforms import to_model_input
from gearsight.predict import Classifier
from gearsight.tta import tta_logits


def accuracy(clf: Classifier, images: np.ndarray, labels: np.ndarray, flip: bool, shift: int) -> float:
    preds = []
    with torch.no_grad():
        for start in range(0, len(images), 64):
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[start:start + 64])),
                               clf.spec.mean, clf.spec.std)
            preds.append(tta_logits(clf.model, x, flip, shift).argmax(1).numpy())
    return float((np.concatenate(preds) == labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("packed", nargs="+", help="packed datasets; the test split of each is scored")
    ap.add_argument("--shifts", default="6,12", help="shift sizes in px for the level-2 rows")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = Classifier.load(args.model, device="cpu")
    data = [PackedDataset(p).subset("test") for p in args.packed]
    levels = [("none", False, 0), ("flip", True, 0)]
    levels += [(f"flip + shifts {s} px", True, int(s)) for s in args.shifts.split(",") if s]
    print(f"{'TTA':20s} " + " ".join(f"{p[-24:]:>24s}" for p in args.packed))
    for name, flip, shift in levels:
        print(f"{name:20s} " + " ".join(f"{accuracy(clf, x, y, flip, shift):24.2%}" for x, y in data), flush=True)


if __name__ == "__main__":
    main()
