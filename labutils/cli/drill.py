"""``labctl drill``: run a failure drill against the running target and print its summary."""

from __future__ import annotations

import argparse

import pandas as pd

from labutils.drills import DRILLS, check_drill, drills_frame, run_drill
from labutils.figures import plot_timeline

__all__ = [
    "register",
]


# --- CLI ---------------------------------------------------------------------------------
def _cmd_drill(args: argparse.Namespace) -> int:
    from labutils.targets import get_backend

    options = {"state_dir": args.state_dir} if args.state_dir else {}
    backend = get_backend(args.target_backend, **options)
    result = run_drill(
        backend,
        args.drill,
        args.on,
        rate_rps=args.rate,
        duration_s=args.duration,
        fault_at_s=args.fault_at,
        restore_at_s=args.restore_at,
        seed=args.seed,
    )
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(drills_frame([result]).T.to_string(header=False))
    if args.plot:
        plot_timeline(
            result.to_frame(), result.marks, title=f"{args.drill} on {result.target}"
        ).savefig(args.plot, dpi=110)
        print(f"timeline written to {args.plot}")
    if args.check:
        check_drill(result)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``labctl drill``."""
    p = subparsers.add_parser(
        "drill",
        help="inject a fault under open-loop load and measure detection, errors and recovery",
    )
    p.add_argument("drill", choices=DRILLS)
    p.add_argument("--on", help="zone (zone-kill) or group (group-*); default the first")
    p.add_argument("--target", dest="target_backend", help="local or eks (default $LAB_TARGET)")
    p.add_argument("--state-dir", help="the twin's state dir (default $LAB_STATE_DIR)")
    p.add_argument("--rate", type=float, default=20.0, help="requests/s (Poisson)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of load (<= 120)")
    p.add_argument("--fault-at", type=float, default=2.0, help="seconds into the load")
    p.add_argument("--restore-at", type=float, help="seconds into the load (default: after it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write the timeline figure to this PNG file")
    p.add_argument("--check", action="store_true", help="exit non-zero if the lesson fails")
    p.set_defaults(handler=_cmd_drill)
