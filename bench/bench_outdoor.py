"""Catalog vs the world: each gear recipe trained once, then measured on the split.csv test photos and
on the outdoor benchmark (the same test photos cut out and pasted on COCO128 scenes), one run.

    .venv/bin/python bench/bench_outdoor.py [--recipes gearnet,gearnet-bg,lite0,lite0-bg] [--out work/bench_outdoor]

Columns: test accuracy, outdoor accuracy, ECE on each, training seconds (wall, evaluation excluded), and
the splits trained on (the configs' final fit: train+val, the last epoch kept).
The outdoor set is built by gearsight.data.outdoor from the *benchmark* half of COCO128; background
augmentation draws from the other half, so no scene is both trained on and tested on.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gearsight import workflow
from gearsight.data.datasets import resolve_dataset
from gearsight.data.outdoor import build_and_pack
from gearsight.data.pack import PackedDataset
from gearsight.data.paths import dataset_dir
from gearsight.train import cpu_has_fast_bf16, resolve_amp

# name -> (pack size, config file or None for TrainConfig's defaults, overrides); the recipes live in configs/
RECIPES = {
    "gearnet": (64, None, {}),                                   # today's from-scratch recipe, no augmentation of backgrounds
    "gearnet-bg": (64, "configs/gear-scratch.yaml", {}),         # from scratch + background augmentation
    "lite0": (144, "configs/gear-lite0.yaml", {"background_p": 0.0}),  # ImageNet EfficientNet-Lite0, catalog only
    "lite0-bg": (144, "configs/gear-lite0.yaml", {}),            # ... + background augmentation (make demo)
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--out", default="work/bench_outdoor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every recipe")
    args = ap.parse_args()
    from bench_cifar import config_overrides

    extra = config_overrides(args.set)
    out = Path(args.out)
    gear, coco = resolve_dataset("gear"), dataset_dir("coco128")
    if coco is None:
        raise SystemExit("the outdoor benchmark needs COCO128 (../shared/data/coco128 or $GEARSIGHT_DATA)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_fast_bf16()}")
    rows = []
    for name in args.recipes.split(","):
        size, config, overrides = RECIPES[name]
        from gearsight.config import TrainConfig

        cfg = (TrainConfig.load(config) if config else TrainConfig()).update(**overrides, **extra, seed=args.seed)
        packed, outdoor = out / f"gear{size}", out / f"outdoor{size}"
        if not (packed / "meta.json").is_file():
            workflow.pack_source(gear / "split.csv", packed, size=size, progress=False)
        if not (outdoor / "meta.json").is_file():  # the composites once, packed at each recipe's size
            if (out / "outdoor" / "split.csv").is_file():
                workflow.pack_source(out / "outdoor" / "split.csv", outdoor, size=size, progress=False)
            else:
                build_and_pack(gear / "split.csv", coco, out / "outdoor", outdoor, pack_size=size)
        run = out / f"run-{name}"
        prep = 0.0
        if cfg.background_p > 0:  # masks and scene pool: made once per pack (like packing), timed apart
            start = time.perf_counter()
            ds = PackedDataset(packed)
            workflow.background_inputs(ds, cfg, workflow.training_indices(ds, cfg.train_splits)[0])
            prep = time.perf_counter() - start
        start = time.perf_counter()
        summary = workflow.train_packed(packed, run, cfg, progress=False)
        seconds = time.perf_counter() - start
        result = {"recipe": name, "size": size, "train_s": seconds, "prep_s": prep, "best_epoch": summary["best_epoch"],
                  "trained_on": "+".join(cfg.train_splits),
                  "bf16": resolve_amp(cfg.amp, torch.device("cpu"))}
        for split_name, data in (("test", packed), ("outdoor", outdoor)):
            report = workflow.evaluate_packed(run / "model.safetensors", data, "test", run / f"eval-{split_name}")
            result[split_name] = report["accuracy"]
            result[f"{split_name}_ece"] = report["ece"]
        rows.append(result)
        print(json.dumps(result), flush=True)
    print()
    print(f"{'recipe':12s} {'px':>4s} {'test acc':>9s} {'outdoor acc':>12s} {'ECE test':>9s} {'ECE outdoor':>12s} "
          f"{'train s':>8s} {'prep s':>7s} {'bf16':>5s} {'trained on':>10s}")
    for r in rows:
        print(f"{r['recipe']:12s} {r['size']:4d} {r['test']:9.2%} {r['outdoor']:12.2%} {r['test_ece']:9.3f} "
              f"{r['outdoor_ece']:12.3f} {r['train_s']:8.0f} {r['prep_s']:7.0f} {str(r['bf16']):>5s} {r['trained_on']:>10s}")
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
