"""``gearsight export MODEL --format onnx --out FILE``: a servable file with the spec inside."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model file to ONNX (or TorchScript) for serving",
        description="Export a .safetensors model to ONNX (dynamic batch axis; classes, input size and "
        "normalisation in the file's metadata, so it can be served alone) or TorchScript.",
    )
    p.add_argument("model", type=Path, help="model file written by training (.safetensors)")
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    out.add_argument("--out", type=Path, default=None,
                     help="output file (default: MODEL with .onnx or .torchscript.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gearsight.export import export_model

    suffix = ".onnx" if args.format == "onnx" else ".torchscript.pt"
    out = args.out or args.model.with_suffix(suffix)
    path = export_model(args.model, out, args.format)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {args.format})")
    return 0
