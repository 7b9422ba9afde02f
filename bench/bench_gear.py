"""Gear accuracy: the CNN recipe (make demo's) vs classical ML (an SVM on 32-px thumbnails), one run.

Both train on the train split of split.csv (the SVM also gets val, it has no use for early
selection; the CNN too with --set 'train_splits=[train,val]' or a --config that says so) and report
accuracy on the 443-image test split. The CNN is trained with --seeds
different seeds, once per precision in --amp (fp32 and bf16 autocast; bf16 is emulated, slowly,
on CPUs without AVX512-BF16/AMX, which changes its time, not its accuracy); medians are quoted.

    .venv/bin/python bench/bench_gear.py [--seeds 3] [--size 64] [--amp off,bf16] [--jobs 2 --threads 1]
                                         [--ensemble 3]
    .venv/bin/python bench/bench_gear.py --seeds 3 --size 96 --amp off,bf16 --jobs 2 --threads 1 --config configs/gear-scratch-catalog.yaml

--ensemble N: each "seed" is an ensemble of N members (seeds N*s .. N*s+N-1, disjoint between
ensembles) in one model file (models/ensemble.py); every member is also tested on its own, so the
same run gives the single-model figures for 3N seeds side by side.

The CNN is GearNet with config.py's defaults (or --config's settings) on photos packed at --size px
(64: config.py's recipe; 96: gear-scratch-catalog.yaml's), translate scaled with the size (4 px at 64)
unless the config sets it. Each run's wrong test photos are printed (indices in the test split).
--jobs runs that many trainings side by side (each with --threads): on a shared 2-core machine two
1-thread runs finish sooner than two 2-thread runs in a row, and the accuracy does not depend on it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from gearsight import workflow
from gearsight.config import TrainConfig
from bench_cifar import config_overrides, cpu_name
from gearsight.data.datasets import resolve_dataset
from gearsight.data.pack import PackedDataset


def svm_baseline(packed32: str) -> tuple[float, float]:
    ds = PackedDataset(packed32)
    xtr, ytr = ds.subset("train")
    xva, yva = ds.subset("val")
    xte, yte = ds.subset("test")
    flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255.0  # noqa: E731
    start = time.perf_counter()
    svm = make_pipeline(StandardScaler(), SVC(C=10.0, kernel="rbf", gamma="scale"))
    svm.fit(np.concatenate([flat(xtr), flat(xva)]), np.concatenate([ytr, yva]))
    acc = float((svm.predict(flat(xte)) == yte).mean())
    return acc, time.perf_counter() - start


def train_and_test(packed: str, run: str, overrides: dict) -> tuple[float, float, list[float], list[int]]:
    """Test accuracy and training seconds of the model, the test accuracy of each ensemble member,
    and the test photos the model gets wrong."""
    summary = workflow.train_packed(packed, run, progress=False, **overrides)
    report = workflow.evaluate_packed(f"{run}/model.safetensors", packed, "test", f"{run}/eval")
    members = [workflow.evaluate_packed(m["model"], packed, "test", f"{m['model']}.eval")["accuracy"]
               for m in summary.get("members", [])]
    return report["accuracy"], summary["train_seconds"], members, report["wrong_indices"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--amp", default="off,bf16", help="precisions to train in, comma-separated (off = fp32)")
    ap.add_argument("--size", type=int, default=64, help="pack size in px (default 64, the from-scratch recipe)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings run side by side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per training (0 = all cores)")
    ap.add_argument("--ensemble", type=int, default=None,
                    help="members per model (seed ensemble; default: the config's, else 1)")
    ap.add_argument("--config", help="a TrainConfig YAML applied to every training before --set, "
                                     "e.g. configs/gear-scratch-catalog.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a TrainConfig override for every training (YAML value), e.g. --set mixup=0.2 --set epochs=80")
    args = ap.parse_args()
    extra = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    extra |= config_overrides(args.set)
    TrainConfig().update(**extra)  # an unknown option fails here, not in the first training
    # seeds are handed out per ensemble (disjoint members), so the member count is bench_gear's own
    config_ensemble = extra.pop("ensemble", 1)  # popped always: --ensemble must win over the config
    args.ensemble = args.ensemble or config_ensemble
    translate = extra.pop("translate", round(4 * args.size / 64))
    gear = resolve_dataset("gear")
    from gearsight.train import cpu_has_fast_bf16

    print(f"torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} cores, native bf16: "
          f"{'yes' if cpu_has_fast_bf16() else 'no (bf16 emulated)'}; {args.jobs} job(s) x "
          f"{args.threads or 'all'} thread(s); {args.size} px, translate {translate}"
          + (f"; ensembles of {args.ensemble}" if args.ensemble > 1 else "")
          + (f"; overrides {extra}" if extra else ""))
    with tempfile.TemporaryDirectory() as tmp:
        workflow.pack_source(gear / "split.csv", f"{tmp}/g32", size=32, progress=False)
        packed = f"{tmp}/g{args.size}"
        workflow.pack_source(gear / "split.csv", packed, size=args.size, progress=False)
        svm_acc, svm_s = svm_baseline(f"{tmp}/g32")
        jobs = [(amp, seed) for amp in args.amp.split(",") for seed in range(args.seeds)]
        # spawn: a forked child would inherit the parent's OpenMP thread pool state
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {}
            for amp, seed in jobs:
                overrides = {"seed": seed * args.ensemble, "amp": amp, "translate": translate,
                             "threads": args.threads, "ensemble": args.ensemble}
                overrides |= ({"epochs": args.epochs} if args.epochs else {}) | extra
                futures[amp, seed] = pool.submit(train_and_test, packed, f"{tmp}/run-{amp}-{seed}", overrides)
            cnn: dict[str, list[tuple[float, float]]] = {}
            singles: dict[str, list[float]] = {}
            for (amp, seed), future in futures.items():
                acc, seconds, members, wrong = future.result()
                cnn.setdefault(amp, []).append((acc, seconds))
                singles.setdefault(amp, []).extend(members)
                print(f"{amp} seed {seed}: test accuracy {acc:.2%}, training {seconds:.0f} s"
                      + (f"; members alone {', '.join(f'{a:.2%}' for a in members)}" if members else "")
                      + f"; wrong test photos {wrong}", flush=True)
    print()
    print(f"{'model':44s} {'test acc (median)':>17s} {'train s (median)':>16s}  all seeds")
    print(f"{'SVM (RBF, C=10) on 32-px thumbnails':44s} {svm_acc:17.2%} {svm_s:16.1f}")
    for amp, runs in cnn.items():
        accs = [a for a, _ in runs]
        name = f"GearNet CNN, {args.size} px, {'fp32' if amp == 'off' else amp}"
        name += f", ensemble of {args.ensemble}" if args.ensemble > 1 else ""
        print(f"{name:44s} {statistics.median(accs):17.2%} {statistics.median(s for _, s in runs):16.1f}  "
              f"{', '.join(f'{a:.2%}' for a in accs)}")
    for amp, accs in singles.items():
        if not accs:  # not an ensemble run
            continue
        name = f"  its {len(accs)} members alone, {'fp32' if amp == 'off' else amp}"
        print(f"{name:44s} {statistics.median(accs):17.2%} {'':16s}  {', '.join(f'{a:.2%}' for a in accs)}")
    print(f"errors on 443 test images: SVM {round((1 - svm_acc) * 443)}; CNN median "
          + ", ".join(f"{amp} {round((1 - statistics.median(a for a, _ in runs)) * 443)}" for amp, runs in cnn.items()))


if __name__ == "__main__":
    main()
