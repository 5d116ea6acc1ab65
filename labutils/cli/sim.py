"""``labctl sim serve``: run simulated vLLM engines.

The lean ``python -m labutils.sim serve`` that the twin runs shares the flags.
"""

from __future__ import annotations

import argparse

from labutils.sim.cli import add_serve_arguments, serve

__all__ = [
    "register",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sim serve`` to ``labctl``."""
    sim = subparsers.add_parser("sim", help="simulated vLLM engines (GPU performance model)")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    serve_parser = sim_sub.add_parser(
        "serve", help="serve MODEL like 'vllm serve', simulating the GPUs (--gpu)"
    )
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(handler=serve)
    sim.set_defaults(handler=lambda _args: sim.print_help() or 2)
