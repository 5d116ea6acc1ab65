"""``labctl render`` and ``labctl validate``: the manifests rendered per zone, checked offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labutils.config import load_config, manifests_dir
from labutils.errors import ValidationError
from labutils.manifests.render import render
from labutils.manifests.validate import validate

__all__ = [
    "register",
]


def _cmd_render(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else manifests_dir()
    config = load_config(args.config or source / "lab.yaml")
    files = render(
        config, args.out, source=source, namespace=args.namespace, participant=args.participant
    )
    where = f" namespace {args.namespace}" if args.namespace else ""
    print(f"rendered {len(files)} files for zones {', '.join(config.zones)}{where} into {args.out}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else manifests_dir()
    problems = validate(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise ValidationError(
            f"{path}: {len(problems)} problem(s) in the manifests (listed above)",
            [str(p) for p in problems],
        )
    print(f"{path}: manifests are valid")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``labctl render`` and ``labctl validate``."""
    p_render = subparsers.add_parser(
        "render", help="render manifests/ per zone into plain YAML for kubectl apply -f"
    )
    p_render.add_argument("--out", required=True, help="output folder (created)")
    p_render.add_argument("--config", help="lab config (default: <source>/lab.yaml)")
    p_render.add_argument("--source", help="source manifests folder (default: manifests/)")
    p_render.add_argument(
        "--namespace",
        help="put every namespaced object into this namespace (default: lab.yaml namespace)",
    )
    p_render.add_argument(
        "--participant",
        action="store_true",
        help="also render participant/ (ServiceAccount, Role, JupyterLab) for that namespace",
    )
    p_render.set_defaults(handler=_cmd_render)
    p_validate = subparsers.add_parser(
        "validate", help="validate rendered or source manifests offline (schemas + lab rules)"
    )
    p_validate.add_argument("path", nargs="?", help="folder or file (default: manifests/)")
    p_validate.set_defaults(handler=_cmd_validate)
