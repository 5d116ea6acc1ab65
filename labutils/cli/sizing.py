"""``labctl sizing``: right-sizing candidates and sweeps on simulated engines."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from labutils.errors import (
    ConfigError,
    LabError,
    LoadTestError,
)
from labutils.sizing import LatencySlo, SweepSettings, candidates, recommend, shortlist, sweep

__all__ = [
    "register",
]


def _parse_fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LoadTestError(
            f"--load-fractions {text!r}: give rising numbers like 0.5,0.75,1,1.25"
        ) from None


def _candidates(args: argparse.Namespace) -> pd.DataFrame:
    return candidates(
        args.model,
        max_model_len=args.max_model_len,
        max_nodes=args.max_nodes,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        slo=LatencySlo(args.tpot_p50_ms, args.ttft_p95_ms),
    )


def _cmd_candidates(args: argparse.Namespace) -> int:
    frame = _candidates(args)
    if not args.all:
        frame = frame[frame["accepted"]].sort_values("roofline_knee_usd_per_mtok")
    cols = ["layout", "accepted", "kv_cache_tokens", "usd_per_hour", "roofline_knee_concurrency",
            "roofline_knee_rps", "roofline_knee_tpot_ms", "roofline_knee_usd_per_mtok"]  # fmt: skip
    if args.all:
        cols.append("reason")
    with pd.option_context("display.max_colwidth", 120, "display.width", 220):
        print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"(roofline knee: largest batch with TPOT <= {args.tpot_p50_ms:g} ms for "
          f"{args.input_tokens} in / {args.output_tokens} out tokens)")  # fmt: skip
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    frame = _candidates(args)
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
        load_fractions=_parse_fractions(args.load_fractions),
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
    )
    slo = LatencySlo(args.tpot_p50_ms, args.ttft_p95_ms)
    measured = sweep(picked, settings, slo=slo)
    cols = ["layout", "rate_rps", "requests", "output_tokens_per_s", "tpot_p50_ms",
            "ttft_p95_ms", "tokens_per_s_per_gpu", "usd_per_mtok"]  # fmt: skip
    print(measured[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"(simulated engines; requests = n behind each percentile; prices as of "
          f"{measured.attrs.get('prices_as_of')})")  # fmt: skip
    try:
        rec = recommend(measured, slo)
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
        ("sweep", _cmd_sweep, "sweep shortlisted layouts to their knee, rank cost per Mtok"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="Hugging Face id or alias, e.g. llama-3.1-8b")
        p.add_argument("--max-model-len", type=int, default=4096)
        p.add_argument("--max-nodes", type=int, default=2, help="largest PP (nodes per group)")
        p.add_argument("--input-tokens", type=int, default=128)
        p.add_argument("--output-tokens", type=int, default=16)
        p.add_argument("--tpot-p50-ms", type=float, default=50.0)
        p.add_argument("--ttft-p95-ms", type=float, default=2000.0)
        p.set_defaults(handler=handler)
        if name == "candidates":
            p.add_argument("--all", action="store_true", help="also show rejected layouts")
        else:
            p.add_argument("--layouts", default="", help="';'-separated layout names to measure")
            p.add_argument("--limit", type=int, default=3, help="shortlist size")
            p.add_argument(
                "--load-fractions",
                default="0.5,0.75,1,1.25",
                help="step rates as fractions of each layout's roofline knee rate",
            )
            p.add_argument("--duration-s", type=float, default=2.5, help="seconds per step")
            p.add_argument("--warmup-s", type=float, default=0.5, help="left out of each step")
