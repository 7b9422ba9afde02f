"""BCCD through the VOC reader vs BCCD converted to COCO json: same data, same settings, same mAP?

    .venv/bin/python bench/bench_bccd_formats.py [--epochs 4] [--parallel] [--out work/bench_bccd_formats] \
        > work/bench_bccd_formats.log 2>&1

Claim checked (issue 13, "Must show"): BCCD converted to COCO json by ``gearsight detect convert``
trains to the same mAP@0.5 (within 0.02) as BCCD read as Pascal VOC, at the same settings.

What runs (the real CLI, as subprocesses):
1. ``detect convert BCCD --split train|test`` -> ``OUT/coco/{train,test}.json`` (file names only;
   the images stay in BCCD/JPEGImages, passed with ``--images``);
2. ``detect train`` twice, once on the VOC folder (``--train-split train``), once on train.json
   (``--train-split all``): bench_bccd.py's model, augmentation and optimizer recipe, but a fixed
   number of ``--epochs`` (warmup ``--warmup`` steps, 50 by default, instead of the recipe's 200,
   which suit its ~65 epochs) instead of a wall-clock budget and no validation (``--val-split none``:
   the final weights are the model), so nothing depends on the clock or the machine's load. With
   ``--threads 1``, one loader worker and ``--seed 0`` each run is deterministic; if the two readers
   give the same records, the two runs are the same run;
3. ``detect evaluate`` of each model on its own form of the official test split (72 images).

Prints both results side by side, the difference, and whether the per-epoch training losses are
identical. An epoch is ~1 minute on an idle core of the 2-core Xeon; ``--parallel`` trains both at
once, one core each (the results do not depend on it).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bccd import REPO, dataset_or_exit, recipe_without, run  # noqa: E402

TOLERANCE = 0.02  # mAP@0.5, the claim
CLOCK_OPTIONS = ("--epochs", "--eval-every", "--eval-from", "--select")  # replaced: fixed epochs, no validation


def fixed_recipe(epochs: int, warmup: int) -> list[str]:
    """bench_bccd.py's recipe without its clock-driven options, for ``epochs`` epochs and no validation."""
    return [*recipe_without((*CLOCK_OPTIONS, "--warmup")), "--warmup", str(warmup), "--epochs", str(epochs),
            "--val-split", "none", "--seed", "0"]


def train_and_test(runs: dict[str, tuple[list[str], list[str]]], out: Path, recipe: list[str],
                   parallel: bool) -> dict[str, dict]:
    """Train each run (one after the other, or all at once with their output in OUT/NAME/train.log),
    then evaluate each on its test data; returns report, training minutes and per-epoch losses."""
    gearsight = [sys.executable, "-m", "gearsight", "detect"]
    commands = {name: [*gearsight, "train", *train_args, "--out", str(out / name / "run"), *recipe]
                for name, (train_args, _) in runs.items()}
    minutes = {}
    if parallel:
        t0, procs = time.time(), {}
        for name, cmd in commands.items():
            (out / name).mkdir(parents=True, exist_ok=True)
            print("$ " + " ".join(cmd) + f"  > {out / name / 'train.log'}", flush=True)
            procs[name] = subprocess.Popen(cmd, cwd=REPO, stdout=open(out / name / "train.log", "w"),
                                           stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for name, proc in procs.items():
            if proc.wait() != 0:
                sys.exit(f"{name}: training failed with exit code {proc.returncode}; see {out / name / 'train.log'}")
            minutes[name] = (time.time() - t0) / 60
            print((out / name / "train.log").read_text(), flush=True)
    else:
        for name, cmd in commands.items():
            t0 = time.time()
            run(cmd)
            minutes[name] = (time.time() - t0) / 60
    results = {}
    for name, (_, test_args) in runs.items():
        run([*gearsight, "evaluate", str(out / name / "run" / "model.safetensors"), *test_args,
             "--out", str(out / name / "test")])
        with open(out / name / "run" / "metrics.csv") as f:
            losses = [row["loss"] for row in csv.DictReader(f)]
        results[name] = {"report": json.loads((out / name / "test" / "report.json").read_text()),
                         "minutes": minutes[name], "losses": losses}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=50, help="warmup steps (an epoch is 51 steps)")
    parser.add_argument("--out", type=Path, default=REPO / "work" / "bench_bccd_formats")
    parser.add_argument("--data", type=Path, default=None, help="BCCD folder (default: ../shared/data/bccd)")
    parser.add_argument("--parallel", action="store_true",
                        help="train both at once (1 thread each; the results do not change, only the wall time)")
    args = parser.parse_args()
    from gearsight.detect.voc import find_voc_root

    data = dataset_or_exit("bccd", args.data)
    if find_voc_root(data) is None:
        sys.exit(f"{data}: no Pascal VOC folder (Annotations/, JPEGImages/) inside")
    images = find_voc_root(data) / "JPEGImages"
    coco = args.out / "coco"
    for split in ("train", "test"):
        run([sys.executable, "-m", "gearsight", "detect", "convert", str(data), "--split", split,
             "--out", str(coco / f"{split}.json")])
    recipe = fixed_recipe(args.epochs, args.warmup)
    runs = {"voc": ([str(data), "--train-split", "train"], [str(data), "--split", "test"]),
            "coco": ([str(coco / "train.json"), "--images", str(images), "--train-split", "all"],
                     [str(coco / "test.json"), "--images", str(images), "--split", "all"])}
    results = train_and_test(runs, args.out, recipe, args.parallel)
    voc, js = results["voc"], results["coco"]
    rows = [("mAP@0.5", "AP50"), ("mAP@[.5:.95]", "AP"), ("AP75", "AP75")]
    print(f"\nBCCD test split (72 images), {args.epochs} epochs, warmup {args.warmup} steps, seed 0, 1 thread")
    print(f"{'metric':<22} {'VOC xml':>9} {'COCO json':>9} {'diff':>8}")
    for label, key in rows:
        a, b = voc["report"][key], js["report"][key]
        print(f"{label:<22} {a:9.4f} {b:9.4f} {b - a:+8.4f}")
    for name in voc["report"]["per_class"]:
        a, b = voc["report"]["per_class"][name]["AP50"], js["report"]["per_class"][name]["AP50"]
        print(f"{'  AP50 ' + name:<22} {a:9.4f} {b:9.4f} {b - a:+8.4f}")
    print(f"{'train minutes':<22} {voc['minutes']:9.1f} {js['minutes']:9.1f}"
          f"{'  (both at once)' if args.parallel else ''}")
    same_losses = voc["losses"] == js["losses"]
    print(f"per-epoch training losses identical: {same_losses} ({len(voc['losses'])} epochs)")
    diff = abs(js["report"]["AP50"] - voc["report"]["AP50"])
    print(f"claim |mAP@0.5 COCO json - VOC| <= {TOLERANCE}: {'MET' if diff <= TOLERANCE else 'NOT met'} ({diff:.4f})")


if __name__ == "__main__":
    main()
