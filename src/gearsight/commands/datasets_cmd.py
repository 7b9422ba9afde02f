"""gearsight datasets {list, download NAME [--dest DIR], where NAME}"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list, download (verified) and locate the known public datasets",
                              description="Known public datasets: the shared copy (../shared/data/NAME) is used "
                                          "when present, else a verified download in work/datasets/NAME.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="known datasets, where each one is found, and its source")
    ls.set_defaults(func=run_list)

    dl = sub.add_parser("download", help="fetch NAME from its public source, verify every file, install it")
    dl.add_argument("name", help="dataset name (see `gearsight datasets list`)")
    g = dl.add_argument_group("where from / where to")
    g.add_argument("--dest", help="install folder (default: work/datasets/NAME, $GEARSIGHT_WORK/datasets/NAME)")
    g.add_argument("--url", help="full URL of the archive, e.g. a mirror (default: $GEARSIGHT_DATASETS_URL/"
                                 "<archive name> if set, else the publisher's URL)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=run_download)

    wh = sub.add_parser("where", help="print the folder NAME resolves to (exit 2 with a hint if absent)")
    wh.add_argument("name")
    wh.set_defaults(func=run_where)


def run_list(args: argparse.Namespace) -> int:
    from gearsight.data.datasets import DATASETS, resolve_dataset

    for spec in DATASETS.values():
        try:
            where = str(resolve_dataset(spec.name))
        except FileNotFoundError:
            where = f"not present (gearsight datasets download {spec.name})"
        print(f"{spec.name}\n  {spec.about}\n  source: {spec.url}\n  here:   {where}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from gearsight.data.datasets import download

    try:
        path = download(args.name, args.dest, url=args.url, progress=not args.quiet)
    except (ConnectionError, TimeoutError) as exc:  # network trouble: one line, not a traceback
        print(f"gearsight datasets download: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def run_where(args: argparse.Namespace) -> int:
    from gearsight.data.datasets import resolve_dataset

    print(resolve_dataset(args.name))  # FileNotFoundError -> cli prints the hint and exits 2
    return 0
