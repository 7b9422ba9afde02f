"""CIFAR-10 from scratch on this machine: accuracy on the 10,000 test images vs wall-clock time.

Packs the shared JPEG tar (read inside the tar), trains with configs/cifar10.yaml (epochs can be
overridden), evaluates with flip TTA, and prints the time of each stage.

    .venv/bin/python bench/bench_cifar.py [--epochs 8] [--tar ../shared/data/cifar10/cifar10_jpg.tar]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gearsight import workflow
from gearsight.config import TrainConfig
from gearsight.data.paths import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tar", default=str(shared_data_dir() / "cifar10" / "cifar10_jpg.tar"))
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--config", default=str(REPO / "configs" / "cifar10.yaml"))
    args = ap.parse_args()
    cfg = TrainConfig.load(args.config).update(epochs=args.epochs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; config {args.config}, {cfg.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = workflow.pack_source(args.tar, f"{tmp}/packed", split=(0.9, 0.1, 0.0), progress=False)
        t_pack = time.perf_counter() - t0
        print(f"pack: {meta['counts']} in {t_pack:.0f} s")
        summary = workflow.train_packed(f"{tmp}/packed", f"{tmp}/run", cfg, progress=False)
        t1 = time.perf_counter()
        report = workflow.evaluate_packed(f"{tmp}/run/model.safetensors", f"{tmp}/packed", "test", f"{tmp}/eval")
        t_eval = time.perf_counter() - t1
    print(f"CIFAR-10 test accuracy {report['accuracy']:.2%} ({report['n']} images); train {summary['train_seconds']:.0f} s, "
          f"pack {t_pack:.0f} s, evaluate {t_eval:.0f} s, total {t_pack + summary['train_seconds'] + t_eval:.0f} s")


if __name__ == "__main__":
    main()
