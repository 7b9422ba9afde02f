"""Input pipeline: packed uint8 + batched augmentation vs torchvision ImageFolder + DataLoader.

Both produce the same thing per epoch: every gear photo as a normalized 64x64 float batch with
flip + translate augmentation. The baseline decodes and resizes each JPEG every epoch (the
torchvision tutorial way); the packed loader decoded once at pack time (pack time printed too).
Then a short training run reports training img/s and the share of time spent waiting on data.

    .venv/bin/python bench/bench_input.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from gearsight import workflow
from gearsight.data.datasets import resolve_dataset
from gearsight.data.loader import Batches
from gearsight.data.pack import PackedDataset

BATCH, SIZE = 64, 64


def baseline_loader(root) -> DataLoader:
    tf = T.Compose([
        T.ToImage(), T.Resize(SIZE - 1, max_size=SIZE), T.CenterCrop(SIZE),  # aspect kept, padded to square
        T.RandomHorizontalFlip(), T.RandomCrop(SIZE, padding=4, fill=255),
        T.ToDtype(torch.float32, scale=True), T.Normalize([0.5] * 3, [0.25] * 3),
    ])
    ds = ImageFolder(str(root), transform=tf, loader=lambda p: __import__("PIL.Image").Image.open(p).convert("RGB"))
    return DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True)


def time_epoch(batches) -> tuple[float, int]:
    n, start = 0, time.perf_counter()
    for x, y in batches:
        n += len(y)
    return time.perf_counter() - start, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    gear = resolve_dataset("gear")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        workflow.pack_source(gear / "split.csv", tmp, size=SIZE, progress=False)
        pack_s = time.perf_counter() - t0
        ds = PackedDataset(tmp)
        packed = Batches.from_arrays(ds.images, ds.labels, batch_size=BATCH, mean=[0.5] * 3, std=[0.25] * 3,
                                     shuffle=True, augment=True, translate=4)
        base = baseline_loader(gear)
        time_epoch(base)  # start the persistent workers outside the timing
        rates = {"packed uint8 + batched aug": [], "ImageFolder + DataLoader(2 workers)": []}
        for r in range(args.repeats):
            dt, n = time_epoch(packed.epoch(r))
            rates["packed uint8 + batched aug"].append(n / dt)
            dt, n = time_epoch(base)
            rates["ImageFolder + DataLoader(2 workers)"].append(n / dt)
        print(f"one-time pack of {len(ds)} photos: {pack_s:.1f} s")
        print(f"{'input pipeline (one epoch, ' + str(len(ds)) + ' images)':45s} {'median img/s':>12s}  runs")
        for name, r in rates.items():
            print(f"{name:45s} {statistics.median(r):12.0f}  {', '.join(f'{v:.0f}' for v in r)}")
        names = list(rates)
        print(f"ratio packed / ImageFolder: {statistics.median(rates[names[0]]) / statistics.median(rates[names[1]]):.1f}x")

        run = f"{tmp}/run"
        summary = workflow.train_packed(tmp, run, progress=False, epochs=args.train_epochs)
        rows = [l.split(",") for l in open(f"{run}/metrics.csv").read().splitlines()]
        col = {c: i for i, c in enumerate(rows[0])}
        ips = [float(r[col["img_per_s"]]) for r in rows[1:]]
        wait = [float(r[col["data_wait"]]) for r in rows[1:]]
        print(f"training ({args.train_epochs} epochs, default recipe): median {statistics.median(ips):.0f} img/s, "
              f"median data wait {statistics.median(wait):.1%} of epoch time")


if __name__ == "__main__":
    main()
