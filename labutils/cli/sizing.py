"""``labctl sizing``: right-sizing candidates and sweeps on simulated engines."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pandas as pd

from labutils.errors import (
    ConfigError,
    LabError,
    LoadTestError,
)

if TYPE_CHECKING:
    pass
from labutils.sizing import LatencySlo, SweepSettings, candidates, recommend, shortlist, sweep

__all__ = [
    "register",
]


def _parse_concurrencies(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LoadTestError(f"--concurrencies {text!r}: give integers like 1,8,32") from None


def _cmd_candidates(args: argparse.Namespace) -> int:
    frame = candidates(args.model, max_model_len=args.max_model_len, max_nodes=args.max_nodes)
    if not args.all:
        frame = frame[frame["accepted"]]
    cols = ["layout", "accepted", "kv_cache_tokens", "usd_per_hour", "roofline_usd_per_mtok"]
    if args.all:
        cols.append("reason")
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(frame[cols].to_string(index=False))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    frame = candidates(args.model, max_model_len=args.max_model_len, max_nodes=args.max_nodes)
    if args.layouts:
        wanted = [name.strip() for name in args.layouts.split(";") if name.strip()]
        unknown = sorted(set(wanted) - set(frame["layout"]))
        if unknown:
            raise ConfigError(
                f"--layouts: unknown {unknown}; see `labctl sizing candidates {args.model}`"
            )
        picked = frame[frame["layout"].isin(wanted)].reset_index(drop=True)
        picked.attrs.update(frame.attrs)
    else:
        picked = shortlist(frame, limit=args.limit)
    settings = SweepSettings(
        concurrencies=_parse_concurrencies(args.concurrencies),
        duration_s=args.duration_s,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
    )
    measured = sweep(picked, settings)
    cols = ["layout", "concurrency", "output_tokens_per_s", "roofline_output_tokens_per_s",
            "tpot_p50_ms", "ttft_p95_ms", "tokens_per_s_per_gpu", "usd_per_mtok"]  # fmt: skip
    print(measured[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"(simulated engines; prices as of {measured.attrs.get('prices_as_of')})")
    try:
        rec = recommend(measured, LatencySlo(args.tpot_p50_ms, args.ttft_p95_ms))
    except LabError as exc:
        print(f"no recommendation: {exc}")
        return 1
    for sentence in rec.reasons:
        print(f"- {sentence}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``labctl sizing candidates`` and ``labctl sizing sweep``."""
    parser = subparsers.add_parser("sizing", help="right-size layouts: candidates, measured sweep")
    sub = parser.add_subparsers(dest="sizing_command", metavar="SUBCOMMAND", required=True)
    for name, handler, text in (
        ("candidates", _cmd_candidates, "list (instance type, TP, PP) layouts for a model"),
        ("sweep", _cmd_sweep, "measure shortlisted layouts on simulated engines, recommend"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="Hugging Face id or alias, e.g. llama-3.1-8b")
        p.add_argument("--max-model-len", type=int, default=4096)
        p.add_argument("--max-nodes", type=int, default=2, help="largest PP (nodes per group)")
        p.set_defaults(handler=handler)
        if name == "candidates":
            p.add_argument("--all", action="store_true", help="also show rejected layouts")
        else:
            p.add_argument("--layouts", default="", help="';'-separated layout names to measure")
            p.add_argument("--limit", type=int, default=4, help="shortlist size")
            p.add_argument("--concurrencies", default="1,8,32")
            p.add_argument("--duration-s", type=float, default=3.0)
            p.add_argument("--input-tokens", type=int, default=256)
            p.add_argument("--output-tokens", type=int, default=64)
            p.add_argument("--tpot-p50-ms", type=float, default=50.0)
            p.add_argument("--ttft-p95-ms", type=float, default=2000.0)
