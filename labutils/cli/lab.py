"""``labctl lab run|list``: execute the notebooks headless and write reports/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import nbformat

from labutils.lab import (
    list_notebooks,
    run_lab,
)

__all__ = [
    "register",
]


def _cmd_run(args: argparse.Namespace) -> int:
    nbs = [Path(p) for p in args.notebooks] if args.notebooks else None
    run_lab(args.out, target=args.target, notebooks=nbs, timeout_s=args.cell_timeout_s)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for path in list_notebooks():
        title = next(
            (
                c.source.splitlines()[0].lstrip("# ")
                for c in nbformat.read(path, 4).cells
                if c.cell_type == "markdown" and c.source.strip()
            ),
            "",
        )
        print(f"{path.name:40s} {title}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``labctl lab run`` and ``labctl lab list``."""
    lab = subparsers.add_parser("lab", help="run the lab's notebooks headless or list them")
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="execute every notebook in order and write reports/")
    run.add_argument("--out", default="reports", help="output folder (default: reports)")
    run.add_argument("--target", choices=("local", "eks"), help="default: $LAB_TARGET or local")
    run.add_argument("--cell-timeout-s", type=float, default=900.0, dest="cell_timeout_s")
    run.add_argument("notebooks", nargs="*", help="a subset of notebooks (default: all)")
    run.set_defaults(handler=_cmd_run)
    lst = sub.add_parser("list", help="list the notebooks in order")
    lst.set_defaults(handler=_cmd_list)
