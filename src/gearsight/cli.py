"""One entry point, ``gearsight``; each subcommand is a thin call into the modules that do the work.

Subcommand modules register themselves through ``register(subparsers)`` and import torch and
friends only inside the handler, so ``gearsight --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, registering function): each adds one or more subcommands.
COMMAND_MODULES = [
    "gearsight.commands.pack_cmd",
    "gearsight.commands.train_cmd",
    "gearsight.commands.evaluate_cmd",
    "gearsight.commands.outdoor_cmd",
    "gearsight.commands.predict_cmd",
    "gearsight.commands.datasets_cmd",
    "gearsight.commands.export_cmd",
    "gearsight.commands.serve_cmd",
    "gearsight.commands.detect_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    from gearsight import __version__

    parser = argparse.ArgumentParser(prog="gearsight", description="From folders of real photos to a trained, measured, saved and served CNN.")
    parser.add_argument("--version", action="version", version=f"gearsight {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        _load_command(name).register(subparsers)
    return parser


def _load_command(name: str):
    """Import one command module. Any failure stops the CLI: a subcommand that quietly vanished
    from --help would hide a packaging error (a file left out of the wheel, a broken dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"gearsight: the command module {name} cannot be imported ({exc}); "
                          "the installation is broken: reinstall gearsight (make install)", name=name) from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        # User mistakes (missing file, bad format) end with one clear line, not a traceback.
        print(f"gearsight {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
