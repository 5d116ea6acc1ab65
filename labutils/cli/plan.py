"""``labctl plan``: the table of what the lab deploys per zone."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from labutils.manifests.plan import (
    deployment_plan,
    render_lab,
)

__all__ = [
    "register",
]


# --- CLI -------------------------------------------------------------------------------------
def _cmd_plan(args: argparse.Namespace) -> int:
    rendered = Path(args.rendered) if args.rendered else render_lab(args.out)
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(deployment_plan(rendered).drop(columns=["file"]).to_string(index=False))
    return 0


def register(subparsers: Any) -> None:
    """Add ``labctl plan``: the table of what the lab deploys per zone."""
    plan = subparsers.add_parser("plan", help="list what the lab deploys (kind, zone, GPUs)")
    plan.add_argument("--rendered", help="a labctl render --out DIR folder (default: render now)")
    plan.add_argument("--out", help="where to render when --rendered is not given")
    plan.set_defaults(handler=_cmd_plan)
