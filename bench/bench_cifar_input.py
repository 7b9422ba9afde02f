"""Training input, one run: packed uint8 vs CTF text vs map file with per-image decode (CIFAR-10).

The same 10,000 CIFAR-10 train images are served three ways as the trainer consumes them, one
epoch each (median of --repeats), batch 256:
- packed: uint8 arrays in RAM, batched flip + translate (gearsight's default loader);
- CTF: streamed from a CNTK Text Format file with the vectorised reader (iter_ctf_samples);
- map file: PNG files listed in a CNTK map file, decoded per image with a CNTK Crop + Scale
  pipeline, 2 DataLoader workers (MapFileDataset.minibatches).

    .venv/bin/python bench/bench_cifar_input.py [--n 10000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gearsight.cntk.ctf import iter_ctf_samples, write_ctf
from gearsight.cntk.dataset import MapFileDataset
from gearsight.data.cifar import read_cifar
from gearsight.data.loader import Batches
from gearsight.data.paths import shared_data_dir

CROP_SCALE = [{"type": "Crop", "cropType": "RandomSide", "sideRatio": "0.8:1.0", "jitterType": "UniRatio"},
              {"type": "Scale", "width": 32, "height": 32, "channels": 3}]


def rate(make_epoch, n_expected: int, repeats: int) -> list[float]:
    out = []
    for r in range(repeats):
        start, n = time.perf_counter(), 0
        for x, y in make_epoch(r):
            n += len(y)
        assert n == n_expected, (n, n_expected)
        out.append(n / (time.perf_counter() - start))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tar", default=str(shared_data_dir() / "cifar10" / "cifar10_jpg.tar"))
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = read_cifar(args.tar)
    images, labels = data.splits["train"].images[: args.n], data.splits["train"].labels[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_ctf(tmp / "train.ctf", images, labels, num_classes=10)
        lines = []
        for i, img in enumerate(images):
            Image.fromarray(img).save(tmp / f"{i:05d}.png")
            lines.append(f"{i:05d}.png\t{labels[i]}")
        (tmp / "map.txt").write_text("\n".join(lines) + "\n")
        packed = Batches.from_arrays(images, labels, batch_size=256, mean=[0.5] * 3, std=[0.25] * 3,
                                     shuffle=True, augment=True, translate=2, fill=0)
        mapped = MapFileDataset(tmp / "map.txt", CROP_SCALE)
        rates = {
            "packed uint8 + batched flip/translate": rate(packed.epoch, len(labels), args.repeats),
            "CTF text, vectorised streaming reader": rate(
                lambda r: iter_ctf_samples(tmp / "train.ctf", (32, 32, 3), batch_size=256), len(labels), args.repeats),
            "map file, PNG decode + CNTK crop/scale, 2 workers": rate(
                lambda r: mapped.minibatches(256, shuffle=True, seed=0, workers=2, epoch=r), len(labels), args.repeats),
        }
        size_mb = (tmp / "train.ctf").stat().st_size / 1e6
    base = statistics.median(rates["map file, PNG decode + CNTK crop/scale, 2 workers"])
    print(f"{args.n} CIFAR-10 train images, batch 256, one epoch each, {args.repeats} repeats (CTF file {size_mb:.0f} MB)")
    print(f"{'training input':52s} {'median img/s':>12s} {'vs map file':>11s}  runs")
    for name, r in rates.items():
        print(f"{name:52s} {statistics.median(r):12.0f} {statistics.median(r) / base:10.1f}x  "
              + ", ".join(f"{v:.0f}" for v in r))


if __name__ == "__main__":
    main()
