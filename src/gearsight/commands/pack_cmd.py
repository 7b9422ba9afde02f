"""gearsight pack SOURCE OUT --size N"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("pack", help="decode images once into the packed uint8 format (or CTF)",
                              description="Decode, resize and store a source's images for fast training.")
    p.add_argument("source", help="class-folder tree (or a .tar/.tar.gz of one), CSV (path,label[,split]), CNTK map "
                   "file, or a CIFAR-10 archive (cifar10_jpg.tar, cifar-10-python.tar.gz, cifar-10-batches-py/, "
                   "Kaggle train/)")
    p.add_argument("out", help="output folder (packed format) or .ctf file with --format ctf")
    g = p.add_argument_group("geometry")
    g.add_argument("--size", type=int, default=64, help="square side in pixels (default 64)")
    g.add_argument("--resize", choices=["pad", "crop", "stretch"], default="pad",
                   help="pad: keep aspect, pad to square (default); crop: centre crop; stretch")
    g.add_argument("--fill", type=int, default=255, help="padding grey level 0-255 (default 255, white)")
    s = p.add_argument_group("split (for sources without one)")
    s.add_argument("--split", default="0.7,0.1,0.2", help="train,val,test fractions (default 0.7,0.1,0.2)")
    s.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=["packed", "ctf"], default="packed")
    o.add_argument("--workers", type=int, default=0, help="decode processes (default: 2, or 1 on a one-core machine)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gearsight.workflow import pack_source

    fractions = tuple(float(f) for f in args.split.split(","))
    if args.format == "ctf":
        return _pack_ctf(args, fractions)
    meta = pack_source(args.source, args.out, args.size, args.resize, args.fill, fractions, args.seed,
                       workers=args.workers or None, progress=not args.quiet)
    report_counts(meta)
    return 0


def report_counts(meta: dict) -> None:
    c = meta["counts"]
    print(f"read {c['read']}, packed {c['packed']} (train {c['packed_train']}, val {c['packed_val']}, "
          f"test {c['packed_test']}), skipped {c['skipped']}; {len(meta['classes'])} classes")
    for item in meta["skipped"]:
        print(f"  skipped {item['path']}: {item['reason']}")


def _pack_ctf(args, fractions) -> int:
    from gearsight.workflow import pack_ctf

    meta, written = pack_ctf(args.source, args.out, args.size, args.resize, args.fill, fractions, args.seed,
                             workers=args.workers or None, progress=not args.quiet)
    report_counts(meta)
    size = meta["size"]  # CIFAR keeps its 32 px whatever --size says
    print("wrote " + ", ".join(str(p) for p in written) + f" ({size}x{size}x3, CHW order)")
    return 0
