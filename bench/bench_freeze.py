"""Training-step time of EfficientNet-Lite0 by input size and frozen stages (TrainConfig.freeze_stages).

Why 144 px with 2 frozen stages is the gear recipe: frozen early stages need no backward pass, and
they hold the largest feature maps, so the time saved pays for more pixels. Each case is timed in
turn within every repeat (so machine load hits all alike); medians, and the ratio to the 128 px
unfrozen step (the recipe before 2026-11-30).

    .venv/bin/python bench/bench_freeze.py [--repeats 7] [--threads 1]
    .venv/bin/python bench/bench_freeze.py --cases 128:0,160:0,224:0 [--contiguous] [--bf16] --repeats 3

--cases px:frozen,... picks the cases (the first is the ratio's base); --contiguous feeds NCHW-contiguous
tensors instead of channels_last (the trainer's layout); --bf16 runs the step under bf16 autocast.
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
    ap.add_argument("--cases", type=lambda v: [tuple(int(x) for x in c.split(":")) for c in v.split(",")],
                    default=CASES, help="px:frozen_stages,... (default: the recipe's comparison)")
    ap.add_argument("--contiguous", action="store_true", help="NCHW-contiguous input instead of channels_last")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast instead of fp32")
    args = ap.parse_args()
    cases = args.cases
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    models = {c: build_model(TrainConfig(arch="timm:tf_efficientnet_lite0", freeze_stages=c[1]), 12, cpu).train()
              for c in cases}
    layout = torch.contiguous_format if args.contiguous else torch.channels_last
    models = {c: m.to(memory_format=layout) for c, m in models.items()}
    inputs = {px: torch.randn(args.batch, 3, px, px).contiguous(memory_format=layout) for px in {c[0] for c in cases}}
    labels = torch.randint(0, 12, (args.batch,))
    times: dict[tuple[int, int], list[float]] = {c: [] for c in cases}
    for rep in range(args.repeats + 1):  # the first round warms oneDNN up and is not counted
        for case, model in models.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = F.cross_entropy(model(inputs[case[0]]), labels)
            loss.backward()
            if rep:
                times[case].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    base = statistics.median(times[cases[0]])
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, forward+backward, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {'contiguous' if args.contiguous else 'channels_last'}")
    print(f"{'px':>4s} {'frozen':>6s} {'step s (median)':>15s} {'img/s':>7s} {f'vs {cases[0][0]} px frozen {cases[0][1]}':>18s}")
    for (px, frozen), ts in times.items():
        med = statistics.median(ts)
        print(f"{px:4d} {frozen:6d} {med:15.3f} {args.batch / med:7.1f} {med / base:17.2f}x")


if __name__ == "__main__":
    main()
