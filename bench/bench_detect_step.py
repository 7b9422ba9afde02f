"""Detection training-step time: torchvision's mobilenet FPN shape vs the `cpu` preset, 1 and 2 threads.

    nice -n 10 .venv/bin/python bench/bench_detect_step.py [--steps 5] [--warmup 2] [--settings tv2,tv1,cpu2,cpu1,profile]
    nice -n 10 .venv/bin/python bench/bench_detect_step.py --steps 3 --settings cpu2,cpu1,profile   # make bench's quick form

One Faster R-CNN training step (forward, backward, gradient clipping, SGD step) on a batch of 4
320x320 crops, built by gearsight's own factory (gearsight.detect.model.create_detector) and its
training transforms (scale jitter 0.75-1.33, random 320 px crop, flips, colour jitter) from BCCD's
train split (../shared/data/bccd, or --data; --synthetic: random images and boxes instead). Settings:
  tv2 / tv1     PRESETS["torchvision"] (torchvision's fasterrcnn_mobilenet_v3_large_fpn layer for
                layer) at min_size 320, its default anchors; 2 / 1 threads
  cpu2 / cpu1   PRESETS["cpu"] (what `gearsight detect train --preset cpu` builds) with bench_bccd's
                auto anchors (6 sizes fitted to BCCD's boxes); 2 / 1 threads
  profile       cpu1 under torch.profiler: each op's share of the step's self CPU time
Each setting runs in a fresh subprocess (torch.set_num_threads and OMP_NUM_THREADS set before any
work, so one setting's thread pool never leaks into the next). The batches are augmented before the
clock starts; --warmup steps are not counted; the median of --steps steps is reported, with min and
max. Prints the machine (CPU model), the load average at the start and the end, and one table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bccd import REPO, dataset_or_exit  # noqa: E402  (bench/ is on sys.path when run as a script)
from bench_cifar import cpu_name  # noqa: E402

BATCH, SIZE = 4, 320
SETTINGS = {  # name: (preset, threads, profiled)
    "tv2": ("torchvision", 2, False),
    "tv1": ("torchvision", 1, False),
    "cpu2": ("cpu", 2, False),
    "cpu1": ("cpu", 1, False),
    "profile": ("cpu", 1, True),
}
LABELS = {
    "tv2": "torchvision mobilenet FPN shape, 320 px, 2 threads",
    "tv1": "torchvision mobilenet FPN shape, 320 px, 1 thread",
    "cpu2": "`cpu` preset (bench_bccd's model), 2 threads",
    "cpu1": "`cpu` preset (bench_bccd's model), 1 thread",
}


def _batches(args, n: int):
    """n batches of BATCH augmented 320x320 crops (lists of tensors, targets) and the class count."""
    import torch

    torch.manual_seed(0)
    if args.synthetic:
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(n):
            images, targets = [], []
            for _ in range(BATCH):
                xy = torch.rand(12, 2, generator=gen) * (SIZE - 60)
                wh = 10 + torch.rand(12, 2, generator=gen) * 50
                images.append(torch.rand(3, SIZE, SIZE, generator=gen))
                targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                                "labels": torch.randint(1, 4, (12,), generator=gen)})
            out.append((images, targets))
        return out, 3, [[17.0, 25.0], [36.0, 53.0], [77.0, 113.0]]
    from gearsight.detect import recipe
    from gearsight.detect.transforms import DetectionDataset, train_transforms
    from gearsight.detect.voc import read_voc

    data = read_voc(dataset_or_exit("bccd", args.data), "train")
    ds = DetectionDataset(data.records, train_transforms(SIZE, 427, SIZE, scale_range=(0.75, 1.33)), cache=True)
    out, i = [], 0
    for _ in range(n):
        items = [ds[(i + k) % len(ds)] for k in range(BATCH)]
        i += BATCH
        out.append(([im for im, _ in items], [t for _, t in items]))
    # bench_bccd's --anchors auto, as gearsight detect train computes it
    anchors = recipe.model_config(data, preset="cpu", min_size=SIZE, max_size=427, scale_range=(0.75, 1.33)).anchor_sizes
    return out, len(data.classes), anchors


def child(args) -> None:
    """One setting, in this (fresh) process: prints one JSON line."""
    preset, threads, profiled = SETTINGS[args.child]
    import torch

    torch.set_num_threads(threads)
    from gearsight.detect.model import PRESETS, DetectorConfig, create_detector
    from gearsight.detect.train import DetectTrainConfig, make_optimizer

    batches, num_classes, anchors = _batches(args, args.warmup + args.steps)
    fields = {**PRESETS[preset], "min_size": SIZE, "max_size": 427}
    cfg = DetectorConfig.from_dict(fields)
    if preset == "cpu":
        cfg.anchor_sizes = anchors
    torch.manual_seed(0)
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", num_classes, cfg).train()
    tcfg = DetectTrainConfig(lr=0.04, batch_size=BATCH, threads=threads)
    opt = make_optimizer(model, tcfg)
    for g in opt.param_groups:
        g["lr"] = 0.004  # a warm-up lr: from random init a full-lr step can diverge, and the time is the same

    def step(images, targets):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_grad)
        opt.step()

    for images, targets in batches[:args.warmup]:
        step(images, targets)
    times, shares, top = [], {}, []
    if profiled:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for images, targets in batches[args.warmup:]:
                step(images, targets)
        ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
        total = sum(t for _, t in ops) or 1.0

        def group(name: str) -> str:
            n = name.lower()
            if "roi_align" in n:
                return "RoIAlign backward" if "backward" in n else "RoIAlign forward"
            if "conv" in n:
                return "convolutions (fwd + bwd)"
            if "batch_norm" in n:
                return "BatchNorm (fwd + bwd)"
            if n.startswith("aten::") and any(k in n for k in ("addmm", "::mm", "matmul", "linear")):
                return "linear layers (box head, fwd + bwd)"
            return "everything else (NMS, anchors, losses, optimizer, ...)"

        for name, t in ops:
            shares[group(name)] = shares.get(group(name), 0.0) + t / total
        top = [(name, t / total) for name, t in sorted(ops, key=lambda x: -x[1])[:8]]
    else:
        for images, targets in batches[args.warmup:]:
            t0 = time.perf_counter()
            step(images, targets)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"setting": args.child, "threads": torch.get_num_threads(), "times": times,
                      "shares": shares, "top": top, "anchors": cfg.anchor_sizes}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (oneDNN's first passes)")
    ap.add_argument("--settings", default="tv2,tv1,cpu2,cpu1,profile")
    ap.add_argument("--data", type=Path, default=None, help="BCCD folder (default: ../shared/data/bccd)")
    ap.add_argument("--synthetic", action="store_true", help="random images and boxes instead of BCCD")
    ap.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        sys.exit(f"unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    import torch

    load0 = os.getloadavg()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"data: {'synthetic' if args.synthetic else 'BCCD train split'}; batch {BATCH} of {SIZE}x{SIZE} crops; "
          f"{args.warmup} warm-up + {args.steps} timed steps per setting, each in a fresh process", flush=True)
    results = {}
    for name in names:
        _, threads, _ = SETTINGS[name]
        cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += (["--synthetic"] if args.synthetic else []) + (["--data", str(args.data)] if args.data else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name}: done in {time.time() - t0:.0f} s", flush=True)
    load1 = os.getloadavg()
    print()
    print("| setting | threads | s/step (median) | s/img | img/s | min-max s/step |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results.items():
        if r["times"]:
            med = statistics.median(r["times"])
            print(f"| {LABELS[name]} | {r['threads']} | {med:.3f} | {med / BATCH:.3f} | {BATCH / med:.1f} | "
                  f"{min(r['times']):.3f}-{max(r['times']):.3f} |")
    if "profile" in results:
        r = results["profile"]
        print()
        print(f"profile of the `cpu` preset's 1-thread step ({args.steps} steps, share of self CPU time):")
        for group, share in sorted(r["shares"].items(), key=lambda x: -x[1]):
            print(f"  {share:6.1%}  {group}")
        print("  top ops: " + ", ".join(f"{n} {s:.1%}" for n, s in r["top"]))
    print(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
