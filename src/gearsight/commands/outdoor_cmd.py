"""gearsight outdoor GEAR/split.csv OUT --pack PACK --size N: the outdoor benchmark (test photos cut
out of the studio and pasted on real scenes), built and packed for `gearsight evaluate`."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("outdoor", help="build the outdoor benchmark: test photos pasted on COCO128 scenes")
    p.add_argument("split_csv", help="the gear split.csv (its test split is used, nothing else)")
    p.add_argument("out", help="folder for the composites (PNG per class + split.csv)")
    p.add_argument("--pack", help="also pack them here, ready for `gearsight evaluate MODEL PACK`")
    p.add_argument("--size", type=int, default=64, help="pack size in px (the model's input size; default 64)")
    p.add_argument("--scenes", help="COCO128 folder (default: $GEARSIGHT_DATA/coco128 or ../shared/data/coco128)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from gearsight.data.outdoor import build_and_pack, build_outdoor
    from gearsight.data.paths import dataset_dir

    scenes = Path(args.scenes) if args.scenes else dataset_dir("coco128")
    if scenes is None:
        raise SystemExit("gearsight outdoor: COCO128's scenes are needed (`gearsight datasets download coco128`, "
                         "or --scenes DIR)")
    if args.pack:
        summary, _ = build_and_pack(args.split_csv, scenes, args.out, args.pack, pack_size=args.size,
                                    seed=args.seed, progress=False)
    else:
        summary = build_outdoor(args.split_csv, scenes, args.out, seed=args.seed, progress=False)
    print(f"outdoor benchmark: {summary['n']} composites on {summary['scenes_used']} scenes in "
          f"{summary['seconds']:.0f} s -> {args.out}" + (f", packed at {args.size} px in {args.pack}" if args.pack else ""))
    print(json.dumps(summary["counts"]))
    return 0
