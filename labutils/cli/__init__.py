"""``labctl``: the lab's command line.

The command line lives in this package only: each module here adds one command group
(``register(subparsers)``) on top of the library, and this file dispatches. Expected failures
(:class:`~labutils.errors.LabError`) print one line and exit non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from labutils import __version__
from labutils.errors import LabError

__all__ = ["build_parser", "main"]

# Modules that contribute subcommands; each defines ``register(subparsers)``.
_COMMAND_MODULES = (
    "labutils.cli.manifests",
    "labutils.cli.plan",
    "labutils.cli.sim",
    "labutils.cli.twin",
    "labutils.cli.drill",
    "labutils.cli.loadtest",
    "labutils.cli.cluster",
    "labutils.cli.instructor",
    "labutils.cli.lab",
    "labutils.cli.scan",
    "labutils.cli.secrets",
    "labutils.cli.sizing",
    "labutils.cli.realengine",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``labctl`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="labctl", description="vllm-lws-lab: multi-zone vLLM with LeaderWorkerSet"
    )
    parser.add_argument("--version", action="version", version=f"labctl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``labctl``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except LabError as exc:
        print(f"labctl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"labctl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
