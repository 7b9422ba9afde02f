"""Compute rate on this CPU: matmul GFLOP/s in fp32 vs bf16, and AirNet's training FLOPs and step speed by width.

    nice -n 10 .venv/bin/python bench/bench_flops.py [--threads 2] [--steps 3] [--widths 64/256/256,64/192/192,48/128/128,32/128/128] [--bf16]
    nice -n 10 .venv/bin/python bench/bench_flops.py --steps 2 --widths 32/128/128 --matmul-size 1024 --bf16   # make bench's quick form

1. matmul: an n x n @ n x n product (--matmul-size, 2048 by default), fp32 and bf16 tensors, median of
   max(5, --steps) after a warm-up, in GFLOP/s (2 n^3 FLOPs a product). On CPUs without AVX512-BF16/AMX
   PyTorch emulates bf16 and it is slower than fp32; with them it is faster.
2. AirNet (gearsight's models/airnet.py, as `gearsight train --arch airnet` builds it: channels_last),
   one training step of a batch of --batch (1024, the CIFAR configs') random 32x32 images: forward,
   cross-entropy, backward, SGD step. FLOPs by torch.utils.flop_counter over forward + backward,
   per image; img/s and the effective GFLOP/s from the median step (fp32, and bf16 autocast with
   --bf16); "one epoch" is 50,000 images at that rate.
3. The share of the fp32 step's self CPU time in convolutions (torch.profiler), for the first width.
Threads: torch.set_num_threads(--threads) before any work. Prints the machine, the load average at
the start and the end, and the tables.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cifar import cpu_name  # noqa: E402  (bench/ is on sys.path when run as a script)


def _median_time(fn, steps: int) -> float:
    fn()  # warm-up: oneDNN builds its kernels on the first call
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rate(n: int, dtype: torch.dtype, steps: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / _median_time(lambda: a @ b, steps) / 1e9


def airnet(widths: tuple[int, ...]):
    from gearsight.models import create_model

    torch.manual_seed(0)
    return create_model("airnet", 10, widths=widths).to(memory_format=torch.channels_last).train()


def train_step(model, x, y, opt, bf16: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed repetitions (median), after one warm-up")
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--widths", default="64/256/256,64/192/192,48/128/128,32/128/128")
    ap.add_argument("--bf16", action="store_true", help="also time AirNet's step under bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = "yes" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no"
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {args.threads} thread(s); native bf16 (AVX512-BF16/AMX): {native}; "
          f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)

    n = args.matmul_size
    reps = max(5, args.steps)
    fp32, bf16 = matmul_rate(n, torch.float32, reps), matmul_rate(n, torch.bfloat16, reps)
    print(f"\nmatmul {n}x{n} @ {n}x{n}, median of {reps}:")
    print("| dtype | GFLOP/s |\n|---|---:|")
    print(f"| fp32 | {fp32:.0f} |\n| bf16 | {bf16:.0f} |", flush=True)

    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    widths_list = [tuple(int(w) for w in s.split("/")) for s in args.widths.split(",") if s.strip()]
    conv_share = None
    for widths in widths_list:
        model = airnet(widths)
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(model(x[:8]), y[:8]).backward()
        gflop_img = counter.get_total_flops() / 8 / 1e9
        model.zero_grad(set_to_none=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True)
        for precision in ("fp32", "bf16") if args.bf16 else ("fp32",):
            step = _median_time(lambda: train_step(model, x, y, opt, precision == "bf16"), args.steps)
            ips = args.batch / step
            rows.append((widths, precision, gflop_img, step, ips))
            print(f"  AirNet {'/'.join(map(str, widths))} {precision}: {step:.2f} s/step", flush=True)
        if conv_share is None:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train_step(model, x, y, opt, False)
            ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
            total = sum(t for _, t in ops) or 1.0
            conv_share = (widths, sum(t for k, t in ops if "conv" in k.lower()) / total)

    print(f"\nAirNet training step, batch {args.batch}, channels_last, {args.threads} thread(s), median of "
          f"{args.steps} after a warm-up:")
    print("| AirNet widths | precision | train GFLOP/img | train img/s | effective GFLOP/s | one epoch (50,000) |")
    print("|---|---|---:|---:|---:|---:|")
    for widths, precision, g, step, ips in rows:
        print(f"| {'/'.join(map(str, widths))} | {precision} | {g:.3f} | {ips:.0f} | {g * ips:.0f} | "
              f"{50_000 / ips:.0f} s |")
    if conv_share:
        print(f"\nconvolutions (forward + backward): {conv_share[1]:.0%} of the fp32 step's self CPU time "
              f"(AirNet {'/'.join(map(str, conv_share[0]))}, torch.profiler)")
    load1 = os.getloadavg()
    print(f"load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
