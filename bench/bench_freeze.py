"""Training-step time of EfficientNet-Lite0 by input size and frozen stages (TrainConfig.freeze_stages).

Why 144 px with 2 frozen stages is the gear recipe: frozen early stages need no backward pass, and
they hold the largest feature maps, so the time saved pays for more pixels. Each case is timed in
turn within every repeat (so machine load hits all alike); medians, and the ratio to the 128 px
unfrozen step (the recipe before 2026-11-30).

    .venv/bin/python bench/bench_freeze.py [--repeats 7] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gearsight.config import TrainConfig
from gearsight.train import build_model

CASES = [(128, 0), (128, 2), (128, 3), (144, 2), (160, 2), (160, 3)]  # (px, freeze_stages)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    models = {c: build_model(TrainConfig(arch="timm:tf_efficientnet_lite0", freeze_stages=c[1]), 12, cpu).train()
              for c in CASES}
    inputs = {px: torch.randn(args.batch, 3, px, px).contiguous(memory_format=torch.channels_last)
              for px in {c[0] for c in CASES}}
    labels = torch.randint(0, 12, (args.batch,))
    times: dict[tuple[int, int], list[float]] = {c: [] for c in CASES}
    for rep in range(args.repeats + 1):  # the first round warms oneDNN up and is not counted
        for case, model in models.items():
            start = time.perf_counter()
            F.cross_entropy(model(inputs[case[0]]), labels).backward()
            if rep:
                times[case].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    base = statistics.median(times[CASES[0]])
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, forward+backward, fp32")
    print(f"{'px':>4s} {'frozen':>6s} {'step s (median)':>15s} {'img/s':>7s} {'vs 128 px unfrozen':>18s}")
    for (px, frozen), ts in times.items():
        med = statistics.median(ts)
        print(f"{px:4d} {frozen:6d} {med:15.3f} {args.batch / med:7.1f} {med / base:17.2f}x")


if __name__ == "__main__":
    main()
