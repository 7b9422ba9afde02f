"""``gearsight serve MODEL``: real-time scoring over HTTP (see docs/SERVING.md).

The options and the work live in ``gearsight.serve.cli`` (so ``python -m gearsight.serve`` needs
nothing from commands/); this registers them as a subcommand.
"""
from __future__ import annotations

from gearsight.serve.cli import DESCRIPTION, HELP, add_arguments, serve


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help=HELP, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=serve)
