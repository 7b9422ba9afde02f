"""Gear accuracy: the CNN recipe (make demo's) vs classical ML (an SVM on 32-px thumbnails), one run.

Both train on the train split of split.csv (the SVM also gets val, it has no use for early
selection) and report accuracy on the 443-image test split. The CNN is trained with --seeds
different seeds, once per precision in --amp (fp32 and bf16 autocast; bf16 is emulated, slowly,
on CPUs without AVX512-BF16/AMX, which changes its time, not its accuracy); medians are quoted.

    .venv/bin/python bench/bench_gear.py [--seeds 3] [--epochs 40] [--amp off,bf16]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from gearsight import workflow
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--amp", default="off,bf16", help="precisions to train in, comma-separated (off = fp32)")
    args = ap.parse_args()
    gear = resolve_dataset("gear")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        workflow.pack_source(gear / "split.csv", f"{tmp}/g32", size=32, progress=False)
        workflow.pack_source(gear / "split.csv", f"{tmp}/g64", size=64, progress=False)
        svm_acc, svm_s = svm_baseline(f"{tmp}/g32")
        cnn: dict[str, list[tuple[float, float]]] = {}
        for amp in args.amp.split(","):
            for seed in range(args.seeds):
                overrides = {"seed": seed, "amp": amp} | ({"epochs": args.epochs} if args.epochs else {})
                run = f"{tmp}/run-{amp}-{seed}"
                summary = workflow.train_packed(f"{tmp}/g64", run, progress=False, **overrides)
                report = workflow.evaluate_packed(f"{run}/model.safetensors", f"{tmp}/g64", "test", f"{run}/eval")
                cnn.setdefault(amp, []).append((report["accuracy"], summary["train_seconds"]))
                print(f"{amp} seed {seed}: test accuracy {report['accuracy']:.2%}, training "
                      f"{summary['train_seconds']:.0f} s", flush=True)
    print()
    print(f"{'model':44s} {'test acc (median)':>17s} {'train s (median)':>16s}  all seeds")
    print(f"{'SVM (RBF, C=10) on 32-px thumbnails':44s} {svm_acc:17.2%} {svm_s:16.1f}")
    for amp, runs in cnn.items():
        accs = [a for a, _ in runs]
        name = f"GearNet CNN, 64 px, {'fp32' if amp == 'off' else amp}"
        print(f"{name:44s} {statistics.median(accs):17.2%} {statistics.median(s for _, s in runs):16.1f}  "
              f"{', '.join(f'{a:.2%}' for a in accs)}")
    print(f"errors on 443 test images: SVM {round((1 - svm_acc) * 443)}; CNN median "
          + ", ".join(f"{amp} {round((1 - statistics.median(a for a, _ in runs)) * 443)}" for amp, runs in cnn.items()))


if __name__ == "__main__":
    main()
