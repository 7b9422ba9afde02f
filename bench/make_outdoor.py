"""Build the outdoor gear benchmark (gear test photos cut out and pasted on COCO128 scenes), and
the measurements behind it (docs/BENCHMARKS.md, "Outdoor benchmark").

    .venv/bin/python bench/make_outdoor.py --out work/outdoor [--pack-size 64]   # build (+ pack)
    .venv/bin/python bench/make_outdoor.py --backgrounds                          # augmentation pool .npy
    .venv/bin/python bench/make_outdoor.py --sheet docs/outdoor_examples.jpg      # 24 composites
    .venv/bin/python bench/make_outdoor.py --mask-stats                           # the matting rule, measured
    .venv/bin/python bench/make_outdoor.py --time-paste                           # paste_on_backgrounds cost

Then: ``gearsight evaluate MODEL work/outdoor64 --split test``. The gear photos come from
$GEARSIGHT_DATA/gear (else ../shared/data/gear), the scenes from .../coco128/train2017.
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from gearsight.data import outdoor
from gearsight.data.paths import dataset_dir, work_dir


def _need(name: str) -> Path:
    path = dataset_dir(name)
    if path is None:
        sys.exit(f"dataset {name!r} not found (set GEARSIGHT_DATA to the folder holding {name}/)")
    return path


def build(args) -> None:
    gear_csv = Path(args.gear) if args.gear else _need("gear") / "split.csv"
    coco = Path(args.coco) if args.coco else _need("coco128") / "train2017"
    out = Path(args.out) if args.out else work_dir() / "outdoor"
    summary = outdoor.build_outdoor(gear_csv, coco, out, seed=args.seed, size=args.size, limit=args.limit)
    print(f"outdoor: {summary['n']} composites ({summary['size']}px, seed {summary['seed']}) from "
          f"{gear_csv} test split on {summary['scenes_used']} of {summary['scenes']} benchmark scenes "
          f"in {summary['seconds']:.1f} s -> {out}")
    print("  " + ", ".join(f"{c} {k}" for c, k in summary["counts"].items()))
    for s in summary["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if args.pack_size:
        from gearsight.workflow import pack_source

        pack_out = Path(args.pack_out) if args.pack_out else work_dir() / f"outdoor{args.pack_size}"
        t0 = time.perf_counter()
        meta = pack_source(out / "split.csv", pack_out, size=args.pack_size)
        print(f"packed {meta['counts']['packed']} (skipped {meta['counts']['skipped']}) at {args.pack_size}px "
              f"in {time.perf_counter() - t0:.1f} s -> {pack_out}")
        print(f"  gearsight evaluate MODEL {pack_out} --split test")


def backgrounds(args) -> None:
    coco = Path(args.coco) if args.coco else _need("coco128") / "train2017"
    path = Path(args.backgrounds_out) if args.backgrounds_out else work_dir() / "backgrounds" / "coco128_augment256.npy"
    t0 = time.perf_counter()
    info = outdoor.build_background_pool(coco, path, side=256, seed=args.seed)
    print(f"augment pool: {info['shape'][0]} scenes {info['shape'][1]}x{info['shape'][2]} -> {path} "
          f"({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")


def sheet(args) -> None:
    """24 composites (every class, seeded pick) as one small JPEG with the class under each."""
    from PIL import Image, ImageDraw

    out = Path(args.out) if args.out else work_dir() / "outdoor"
    with open(out / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(args.seed)
    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r["path"])
    picks = [p for c in sorted(by_class) for p in rng.choice(by_class[c], min(2, len(by_class[c])), replace=False)][:24]
    tile, cap, cols = 160, 14, 6
    rows_n = -(-len(picks) // cols)
    canvas = Image.new("RGB", (cols * tile, rows_n * (tile + cap)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(picks):
        im = Image.open(out / p).convert("RGB").resize((tile - 4, tile - 4), Image.Resampling.LANCZOS)
        x, y = (i % cols) * tile, (i // cols) * (tile + cap)
        canvas.paste(im, (x + 2, y + 2))
        draw.text((x + 4, y + tile - 1), p.split("/")[0], fill="black")
    path = Path(args.sheet)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=82, optimize=True)
    print(f"contact sheet: {len(picks)} composites -> {path} ({path.stat().st_size / 1e3:.0f} KB)")


def mask_stats(args) -> None:
    """The matting rule on every gear photo, and against the real alpha mattes as ground truth."""
    from PIL import Image

    from gearsight.data import matting

    gear = _need("gear")
    with open(gear / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kinds = {"rgb": 0, "cutout alpha": 0, "canvas alpha": 0, "opaque alpha": 0}
    cov, holes, secs, truth = [], 0, [], []
    sweep_t = (200, 220, 230, 240, 245, 250)
    sweep = []
    for r in rows:
        rgba = matting.decode_rgba(gear / r["path"])
        t0 = time.process_time()
        mask = matting.gear_mask(rgba)
        secs.append(time.process_time() - t0)
        a = rgba[..., 3]
        if a.min() == 255:
            kinds["rgb" if Image.open(gear / r["path"]).mode == "RGB" else "opaque alpha"] += 1
        elif matting.is_cutout_alpha(a):
            kinds["cutout alpha"] += 1
            truth.append(rgba)
        else:
            kinds["canvas alpha"] += 1
        cov.append(float((mask >= 128).mean()))
        if not matting.is_cutout_alpha(a):
            rgb = matting.flatten_on_white(rgba)
            holes += int((matting.background(rgb) != matting.background(rgb, holes=False)).any())
            sweep.append([1 - matting.background(rgb, t, holes=False).mean() for t in sweep_t])
    cov = np.array(cov)
    n = len(rows)
    print(f"{n} gear photos: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    print(f"mask coverage (share of the frame, mask >= 128): median {np.median(cov):.3f}; in 5-95 %: "
          f"{((cov >= 0.05) & (cov <= 0.95)).mean():.4f} ({((cov < 0.05) | (cov > 0.95)).sum()} outside: "
          f"{(cov < 0.05).sum()} under 5 %, {(cov > 0.95).sum()} over 95 %)")
    print(f"flood-filled photos with an enclosed hole removed: {holes} of {len(sweep)} ({holes / len(sweep):.1%})")
    print(f"gear_mask CPU time per photo: median {1e3 * statistics.median(secs):.1f} ms, "
          f"mean {1e3 * statistics.fmean(secs):.1f} ms")
    s = np.array(sweep)
    print("threshold sweep (flood fill only): median coverage " +
          ", ".join(f"T={t} {np.median(s[:, j]):.3f}" for j, t in enumerate(sweep_t)))
    print("  photos whose coverage moves > 5 points between neighbouring thresholds: " +
          ", ".join(f"{sweep_t[j]}->{sweep_t[j + 1]}: {int((np.abs(s[:, j + 1] - s[:, j]) > 0.05).sum())}"
                    for j in range(len(sweep_t) - 1)))
    # Ground truth: real mattes flattened on white and saved as JPEG, matted without their alpha.
    for q in (None, 90):
        res = {"flood": [], "flood+holes": [], "flood+holes+edge": []}
        for rgba in truth:
            rgb = matting.flatten_on_white(rgba)
            if q:
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, "JPEG", quality=q)
                rgb = np.asarray(Image.open(buf).convert("RGB"))
            gt = rgba[..., 3] >= 128
            for name, m in (("flood", ~matting.background(rgb, holes=False)),
                             ("flood+holes", ~matting.background(rgb)),
                             ("flood+holes+edge", matting.gear_mask(rgb) >= 128)):
                res[name].append((m & gt).sum() / max(1, (m | gt).sum()))
        print(f"vs {len(truth)} real alpha mattes ({'PNG' if q is None else f'JPEG q{q}'}): mean IoU " +
              ", ".join(f"{k} {np.mean(v):.4f} (min {np.min(v):.3f})" for k, v in res.items()))


def time_paste(args) -> None:
    """paste_on_backgrounds on the two batch shapes, every image pasted (p = 1) and half (p = 0.5)."""
    import torch

    from gearsight.data.composite import paste_on_backgrounds, prepare_backgrounds

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (64, 256, 256, 3), dtype=np.uint8)
    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        for shape, layout in (((64, 64, 64, 3), "nhwc"), ((64, 3, 160, 160), "nchw")):
            hw = shape[1:3] if layout == "nhwc" else shape[2:]
            t0 = time.perf_counter()
            bgs = prepare_backgrounds(pool, tuple(hw), layout=layout)
            prep = time.perf_counter() - t0
            x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
            m = torch.from_numpy(rng.integers(0, 256, (shape[0], *hw), dtype=np.uint8))
            g = torch.Generator().manual_seed(0)
            for p in (1.0, 0.5):
                wall, cpu = [], []
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    paste_on_backgrounds(x, m, bgs, g, p=p, layout=layout)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                print(f"{threads} thread(s) {'x'.join(map(str, shape))} {layout} p={p}: median "
                      f"{1e3 * statistics.median(wall):.2f} ms wall, {1e3 * statistics.median(cpu):.2f} ms CPU "
                      f"(min wall {1e3 * min(wall):.2f} ms; prepare_backgrounds, once: {prep:.2f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="benchmark folder (default work/outdoor)")
    ap.add_argument("--gear", help="gear split.csv (default: the gear dataset's)")
    ap.add_argument("--coco", help="scene folder (default: coco128/train2017)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=outdoor.DEFAULT_SIZE, help="composite side in px (default 256)")
    ap.add_argument("--limit", type=int, help="only the first N test photos")
    ap.add_argument("--pack-size", type=int, help="also pack the benchmark at this size")
    ap.add_argument("--pack-out", help="pack folder (default work/outdoor<SIZE>)")
    ap.add_argument("--backgrounds", action="store_true", help="build the augmentation pool (augment scenes) instead")
    ap.add_argument("--backgrounds-out", help="pool .npy (default work/backgrounds/coco128_augment256.npy)")
    ap.add_argument("--sheet", help="write a contact sheet of 24 composites of --out to this JPEG instead")
    ap.add_argument("--mask-stats", action="store_true", help="measure the matting rule on the gear photos instead")
    ap.add_argument("--time-paste", action="store_true", help="time paste_on_backgrounds instead")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    if args.backgrounds:
        backgrounds(args)
    elif args.sheet:
        sheet(args)
    elif args.mask_stats:
        mask_stats(args)
    elif args.time_paste:
        time_paste(args)
    else:
        build(args)


if __name__ == "__main__":
    main()
