"""``python -m labutils.sim serve MODEL [flags]``: the lean entry point the local twin runs."""

from __future__ import annotations

import argparse
import sys

from labutils.errors import LabError
from labutils.sim.cli import add_serve_arguments, serve


def main(argv: list[str] | None = None) -> int:
    """Parse ``serve MODEL [flags]`` and run; a ``LabError`` prints one line and exits != 0."""
    parser = argparse.ArgumentParser(prog="python -m labutils.sim")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve MODEL like 'vllm serve'"))
    # vllm serve accepts --foo_bar as well as --foo-bar (FlexibleArgumentParser).
    raw = sys.argv[1:] if argv is None else argv
    normalised = [
        a.split("=", 1)[0].replace("_", "-") + a[len(a.split("=", 1)[0]) :]
        if a.startswith("--")
        else a
        for a in raw
    ]
    args = parser.parse_args(normalised)
    try:
        return serve(args)
    except LabError as exc:
        print(f"labutils.sim serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
