"""Faster R-CNN on COCO128 read from its own COCO instances json, evaluated by pycocotools on held-out images.

    .venv/bin/python bench/bench_coco128.py [--epochs 5] [--out work/bench_coco128] \
        > work/bench_coco128.log 2>&1

Claim checked (issue 13, "Must show"): the COCO-json path trains and evaluates on real COCO data, not
only through a VOC conversion. The figure is honest, not good: 99 training photos for 80 categories,
from scratch, on a CPU.

The split is by image and fixed: ``gearsight detect`` holds out every image whose
``crc32(file_name) % 10000 < 2000`` (``--val-fraction 0.2``, gearsight/detect/coco.py ``in_holdout``):
29 of the 128 images (211 boxes, 44 categories) are "val", the other 99 (728 boxes, 70 categories)
"train", the same on every machine and in every run. Training never sees the held-out images: it
runs with ``--val-split none`` for a fixed number of epochs and keeps the final weights, then
``detect evaluate --split val`` scores them with pycocotools' COCOeval.

Model and optimizer: bench_bccd.py's CPU recipe (mobilenet_v3 FPN ``cpu`` preset, 320 px, auto
anchors, scale jitter, SGD lr 0.04 batch 4, 1 thread) without its vertical flips, for ``--epochs``
epochs (a fixed count, so the figure does not depend on the machine's load) and a warmup of
``--warmup`` steps (24 by default: the 99 images make 24 steps an epoch). Seed 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bccd import REPO, dataset_or_exit, recipe_without, run  # noqa: E402
from bench_bccd_formats import CLOCK_OPTIONS  # noqa: E402


def coco_recipe(epochs: int, warmup: int) -> list[str]:
    """bench_bccd.py's model and optimizer; fixed epochs, a shorter warmup, no vertical flips (photos have an up)."""
    return [*recipe_without((*CLOCK_OPTIONS, "--warmup"), flags=("--vflip",)), "--warmup", str(warmup),
            "--epochs", str(epochs), "--train-split", "train", "--val-split", "none", "--seed", "0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=24, help="warmup steps (an epoch is 24 steps)")
    parser.add_argument("--out", type=Path, default=REPO / "work" / "bench_coco128")
    parser.add_argument("--data", type=Path, default=None, help="coco128 folder (default: ../shared/data/coco128)")
    args = parser.parse_args()
    data = dataset_or_exit("coco128", args.data)
    gearsight = [sys.executable, "-m", "gearsight", "detect"]
    t0, load0 = time.time(), os.getloadavg()
    run([*gearsight, "train", str(data), "--out", str(args.out / "run"), *coco_recipe(args.epochs, args.warmup)])
    train_min = (time.time() - t0) / 60
    run([*gearsight, "evaluate", str(args.out / "run" / "model.safetensors"), str(data), "--split", "val",
         "--out", str(args.out / "val"), "--draw", "6"])
    report = json.loads((args.out / "val" / "report.json").read_text())
    scored = {k: v for k, v in report["per_class"].items() if v["AP50"] is not None}
    print(f"\nCOCO128 held-out images ({report['images']} images, {report['boxes']} boxes, {len(scored)} categories "
          f"with ground truth), {args.epochs} epochs from scratch, warmup {args.warmup} steps, seed 0, 1 thread")
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        print(f"{key:<6} {report[key]:.4f}")
    best = sorted(scored.items(), key=lambda kv: -kv[1]["AP50"])
    print("AP50 by category, best first: " + ", ".join(f"{k} {v['AP50']:.3f}" for k, v in best[:8]))
    print(f"categories with AP50 > 0: {sum(v['AP50'] > 0 for v in scored.values())} of {len(scored)}")
    print(f"wall time: training {train_min:.1f} min, all {(time.time() - t0) / 60:.1f} min; load average at start "
          f"{load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
