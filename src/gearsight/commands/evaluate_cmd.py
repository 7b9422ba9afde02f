"""gearsight evaluate MODEL DATA --split test --out DIR"""
from __future__ import annotations

import argparse

from gearsight.devices import add_device_option


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="accuracy, per-class table, confusion matrix, misclassified gallery")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("data", help="packed dataset folder")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--out", help="report folder (default: <model folder>/eval-<split>)")
    p.add_argument("--no-tta", dest="tta", action="store_false", help="no flip test-time augmentation")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gearsight.evaluate import format_report
    from gearsight.workflow import evaluate_packed

    out = Path(args.out) if args.out else Path(args.model).parent / f"eval-{args.split}"
    report = evaluate_packed(args.model, args.data, args.split, out, tta=args.tta, device=args.device)
    print(format_report(report))
    print(f"report: {out / 'report.json'}")
    return 0
