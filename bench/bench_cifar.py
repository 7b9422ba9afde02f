"""CIFAR-10 from scratch on this machine: test accuracy (10,000 JPEG test images) vs wall-clock time.

Claim checked (issue 3, "Must show"): >= 92% in <= 10 minutes and >= 94% in <= 30 minutes of wall
time on the 2-core CPU, everything included: packing the JPEG tar (read inside the tar), training,
and the test evaluation with the model's own test-time augmentation.

    .venv/bin/python bench/bench_cifar.py --config configs/cifar10-10min.yaml --budget 10
    .venv/bin/python bench/bench_cifar.py --config configs/cifar10-30min.yaml --budget 30 [--amp bf16]

The configs set ``minutes`` (gearsight train --minutes): the epoch count is measured on this machine
to fit the training budget, and the run prints what it chose.

By default all 50,000 training images are used and no validation split is held out (airbench's
protocol): the model is the last epoch's, so the test set never selects anything.
``--val-fraction 0.1`` holds out 5,000 for a per-epoch curve (which costs time).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from gearsight import workflow
from gearsight.config import TrainConfig
from gearsight.data.paths import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def config_overrides(items: list[str]) -> dict:
    """TrainConfig overrides from the benches' ``--set KEY=VALUE`` items, each value read as YAML."""
    import yaml

    return {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tar", default=str(shared_data_dir() / "cifar10" / "cifar10_jpg.tar"))
    ap.add_argument("--config", default=str(REPO / "configs" / "cifar10-30min.yaml"))
    ap.add_argument("--epochs", type=int, help="override the config's epochs (and its minutes: --minutes 0)")
    ap.add_argument("--minutes", type=float, help="override the config's training budget (0 = use epochs)")
    ap.add_argument("--amp", choices=["auto", "off", "bf16"], help="override the config's precision")
    ap.add_argument("--widths", type=lambda s: [int(v) for v in s.split(",")], help="override, e.g. 64,256,256")
    ap.add_argument("--val-fraction", type=float, default=0.0)
    ap.add_argument("--budget", type=float, default=None, help="minutes the claim allows (for the verdict line)")
    ap.add_argument("--target", type=float, default=None, help="accuracy the claim needs, e.g. 0.92")
    ap.add_argument("--out", default=None, help="keep the run folder here (default: a temporary folder)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a TrainConfig override (YAML value), e.g. --set cutout=8 --set translate=3")
    args = ap.parse_args()
    extra = config_overrides(args.set)
    cfg = TrainConfig.load(args.config).update(epochs=args.epochs, widths=args.widths, minutes=args.minutes,
                                               amp=args.amp, **extra)
    if args.epochs is not None and args.minutes is None:
        cfg.minutes = 0.0  # an explicit epoch count wins over the config's budget
    plan = f"{cfg.minutes:g}-minute training budget" if cfg.minutes else f"{cfg.epochs} epochs"
    print(f"torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} cores; config {args.config}, "
          f"{cfg.arch} {cfg.widths}, {plan}, batch {cfg.batch_size}, amp {cfg.amp}"
          + (f", overrides {extra}" if extra else ""), flush=True)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        t0 = time.perf_counter()
        meta = workflow.pack_source(args.tar, out / "packed", split=(1 - args.val_fraction, args.val_fraction, 0.0),
                                    progress=False)
        t_pack = time.perf_counter() - t0
        print(f"pack: {meta['counts']} in {t_pack:.0f} s", flush=True)
        summary = workflow.train_packed(out / "packed", out / "run", cfg, progress=False)
        # an ensemble's members each fit their share of the budget: report each one's epochs ("12+13")
        runs = sorted((out / "run").glob("member-*")) or [out / "run"]
        epochs = "+".join(str(TrainConfig.load(run / "config.yaml").epochs) for run in runs)
        t1 = time.perf_counter()
        report = workflow.evaluate_packed(out / "run" / "model.safetensors", out / "packed", "test", out / "eval")
        t_eval = time.perf_counter() - t1
        total = time.perf_counter() - t0
    print(f"CIFAR-10 test accuracy {report['accuracy']:.2%} ({report['n']} images); total wall {total:.0f} s "
          f"= pack {t_pack:.0f} + train {summary['train_seconds']:.0f} ({epochs} epochs) + evaluate {t_eval:.0f} s "
          f"(+ start-up and the budget's measurement); "
          f"load average at start {load0:.1f}, at end {os.getloadavg()[0]:.1f}")
    if args.budget and args.target:
        met = report["accuracy"] >= args.target and total <= args.budget * 60
        print(f"claim >= {args.target:.0%} in <= {args.budget:g} min: {'MET' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
