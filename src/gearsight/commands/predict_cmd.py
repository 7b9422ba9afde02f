"""gearsight predict MODEL IMAGE..."""
from __future__ import annotations

import argparse
import json
import sys

from gearsight.devices import add_device_option


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-k labels for image files")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gearsight.image.decode import DecodeError
    from gearsight.predict import Classifier

    clf = Classifier.load(args.model, device=args.device)
    results, failed = [], 0
    for path in args.images:  # one at a time so one unreadable file does not sink the others
        try:
            pred = clf.predict(path, top_k=args.top_k)
            results.append({"path": path, **pred.to_dict()})
        except DecodeError as exc:
            failed += 1
            results.append({"path": path, "error": exc.reason})
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        for r in results:
            if "error" in r:
                print(f"{r['path']}: ERROR {r['error']}", file=sys.stderr)
                continue
            tops = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top_k"])
            print(f"{r['path']}: {tops}")
    return 1 if failed else 0
