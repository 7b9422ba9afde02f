"""Loading the 60,000-JPEG CIFAR-10 tar into uint8 arrays: gearsight vs a plain serial loop.

    nice -n 10 .venv/bin/python bench/bench_cifar_load.py [--tar PATH] [--repeats 1]

Methods, each reading ../shared/data/cifar10/cifar10_jpg.tar from inside the archive:
  - baseline: one process walks the tar and decodes each member with
    ``np.asarray(Image.open(BytesIO(data)).convert("RGB"))``;
  - gearsight ``read_cifar(tar, workers=1)``: the same walk, decode_image (EXIF, modes, size
    checks, sha256 of every member) in-process;
  - gearsight ``read_cifar(tar, workers=2)``: the walk in the main process, decoding on a pool of 2.
Each result is checked equal to the baseline's (same images, same order) before its time prints.
Wall time and CPU time (this process + its worker processes) are both given: the machine is shared.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import statistics
import tarfile
import time
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from gearsight.data.cifar import read_cifar
from gearsight.data.paths import shared_data_dir


def baseline(path: Path) -> dict[str, np.ndarray]:
    """What one writes without thinking about speed: serial, PIL's convert("RGB"), sorted at the end."""
    decoded = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                data = tar.extractfile(member).read()
                decoded[member.name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    images = {}
    for split in ("train", "test"):
        names = sorted((n for n in decoded if PurePosixPath(n).parts[0] == split),
                       key=lambda n: PurePosixPath(n).parts[1:])
        images[split] = np.stack([decoded[n] for n in names])
    return images


def gearsight(path: Path, workers: int) -> dict[str, np.ndarray]:
    data = read_cifar(path, workers=workers)
    assert not data.skipped, data.skipped[:3]
    return {split: s.images for split, s in data.splits.items()}


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(fn) -> tuple[float, float, dict]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tar", type=Path, default=shared_data_dir() / "cifar10" / "cifar10_jpg.tar")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    methods = {"baseline: serial tar walk + PIL convert": lambda: baseline(args.tar),
               "gearsight read_cifar, workers=1": lambda: gearsight(args.tar, 1),
               "gearsight read_cifar, workers=2": lambda: gearsight(args.tar, 2)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    reference = None
    names = list(methods)
    for r in range(args.repeats):
        for name in names[r % 3:] + names[:r % 3]:  # interleaved and rotated: load bursts hit every method
            fn = methods[name]
            wall, cpu, out = measure(fn)
            print(f"  repeat {r}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
            reference = reference or out
            for split in ("train", "test"):
                np.testing.assert_array_equal(out[split], reference[split])
            times[name].append((wall, cpu))
    n = sum(len(v) for v in reference.values())
    cpu = platform.processor() or platform.machine()
    print(f"{n} images from {args.tar} ({args.tar.stat().st_size / 1e6:.1f} MB); {cpu}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; median of {args.repeats}")
    # On a shared machine a run's wall time is its best case plus whatever other jobs took from it,
    # so the fastest repeat is the least disturbed estimate; the median and CPU time are shown too.
    best = {name: min(w for w, _ in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in times.items()}
    print("| method | best wall s | images/s | vs baseline | median wall s | CPU s | vs baseline (CPU) |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in times.items():
        median = statistics.median(w for w, _ in runs)
        print(f"| {name} | {best[name]:.1f} | {n / best[name]:,.0f} | {best[names[0]] / best[name]:.2f} | "
              f"{median:.1f} | {cpu[name]:.1f} | {cpu[names[0]] / cpu[name]:.2f} |")


if __name__ == "__main__":
    main()
