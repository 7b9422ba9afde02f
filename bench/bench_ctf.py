"""CTF reader (and writer) throughput vs a plain line-by-line Python parser, on CIFAR-shaped files.

    nice -n 10 .venv/bin/python bench/bench_ctf.py [--samples 5000] [--repeats 3]

Writes a file of random 32x32x3 uint8 images with one-hot labels (what ``gearsight pack --format ctf``
produces for CIFAR-10) to a temp dir, then times, median of ``--repeats`` runs each:
  - baseline: ``for line in f``, split on '|' and whitespace, ``float()`` every token;
  - gearsight CTFReader: the default reader (vectorised chunks), and the same reader forced onto its
    full-grammar line parser (``vectorized=False``), which every non-integer file takes;
  - the same three on a float-valued file (pixels / 255, 6 significant digits), where gearsight falls
    back to the line parser.
Every reader's output is checked equal to the baseline's before its time is printed.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gearsight.data.ctf import CTFReader, StreamSpec, write_ctf

STREAMS = {"features": StreamSpec(3072), "labels": StreamSpec(10)}


def baseline_read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The reference: what one writes without thinking about speed (each line's floats go straight
    into a float32 array, so memory stays that of the result)."""
    features, labels = [], []
    with open(path) as f:
        for line in f:
            streams = {}
            for part in line.split("|")[1:]:
                tokens = part.split()
                streams[tokens[0]] = np.array([float(t) for t in tokens[1:]], np.float32)
            features.append(streams["features"])
            labels.append(streams["labels"])
    return np.stack(features), np.stack(labels)


def baseline_write(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "w") as f:
        for row, y in zip(rows, labels):
            onehot = " ".join("1" if c == y else "0" for c in range(10))
            f.write(f"|labels {onehot} |features {' '.join(map(str, row))}\n")


def ours_read(path: Path, vectorized: bool = True) -> tuple[np.ndarray, np.ndarray]:
    reader = CTFReader(path, STREAMS, vectorized=vectorized)
    batches = list(reader.minibatches(256))  # the trainer's access pattern
    return np.concatenate([b["features"] for b in batches]), np.concatenate([b["labels"] for b in batches])


def interleaved_medians(runs: dict, repeats: int) -> tuple[dict[str, tuple[float, float]], dict[str, object]]:
    """Median (wall, CPU) seconds of each run. Runs alternate within each repeat, so load that comes
    and goes on this shared machine hits all of them alike; CPU time is what load inflates least."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    results = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
            for name, t in times.items()}, results


def report(size_mb: float, seconds: dict[str, tuple[float, float]]) -> None:
    base_wall, base_cpu = next(iter(seconds.values()))
    print(f"  {'':<44} {'wall s':>7} {'MB/s':>7} {'ratio':>6} | {'CPU s':>6} {'MB/s':>7} {'ratio':>6}")
    for name, (wall, cpu) in seconds.items():
        print(f"  {name:<44} {wall:7.2f} {size_mb / wall:7.1f} {base_wall / wall:6.1f} | "
              f"{cpu:6.2f} {size_mb / cpu:7.1f} {base_cpu / cpu:6.1f}")


def compare(title: str, path: Path, repeats: int, runs: dict) -> None:
    size_mb = path.stat().st_size / 1e6
    print(f"\n{title}: {path.name}, {size_mb:.1f} MB, median of {repeats}")
    seconds, results = interleaved_medians(runs, repeats)
    reference = next(iter(results.values()))
    for features, labels in results.values():  # every reader returns the baseline's arrays
        np.testing.assert_array_equal(features, reference[0])
        np.testing.assert_array_equal(labels, reference[1])
    report(size_mb, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.samples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        ints, plain = Path(tmp) / "cifar_uint8.ctf", Path(tmp) / "baseline_written.ctf"
        print(f"\nwriter: {args.samples} images 32x32x3, median of {args.repeats}")
        seconds, _ = interleaved_medians({
            "baseline: per-row str.join": lambda: baseline_write(plain, images, labels),
            "gearsight write_ctf": lambda: write_ctf(ints, images, labels, 10)}, args.repeats)
        assert ints.read_bytes() == plain.read_bytes(), "writers disagree"
        report(ints.stat().st_size / 1e6, seconds)
        plain.unlink()
        compare("reader, integer pixels", ints, args.repeats, {
            "baseline: for line in f, split, float()": lambda: baseline_read(ints),
            "gearsight CTFReader (vectorised)": lambda: ours_read(ints),
            "gearsight CTFReader (line parser only)": lambda: ours_read(ints, vectorized=False),
        })
        floats = Path(tmp) / "cifar_float.ctf"
        n_float = max(1, args.samples // 5)
        write_ctf(floats, np.round(images[:n_float] / 255.0, 6).reshape(n_float, -1), labels[:n_float], 10)
        compare("reader, float values (line-parser fallback)", floats, args.repeats, {
            "baseline: for line in f, split, float()": lambda: baseline_read(floats),
            "gearsight CTFReader": lambda: ours_read(floats),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
