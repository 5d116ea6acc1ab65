"""``labctl loadtest`` and ``labctl monitor``."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labutils._aio import run_sync
from labutils.errors import EndpointError, LoadTestError
from labutils.loadtest.schedule import ARRIVALS, Schedule, closed_loop, open_loop
from labutils.loadtest.sender import run_load
from labutils.loadtest.summary import LoadSummary, parse_slo, summarize, sweep_frame
from labutils.metrics.prometheus import prometheus_frame
from labutils.metrics.scrape import monitor_async
from labutils.metrics.series import balance, load_distribution, metrics_frame

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``loadtest`` and ``monitor`` subcommands."""
    p = subparsers.add_parser(
        "loadtest",
        help="open- or closed-loop streaming load against an OpenAI-compatible URL",
        description=(
            "Send seeded load (open loop at --rate, or --concurrency users) and print latency "
            "percentiles, throughput, goodput, errors and send lag. A comma list of rates or "
            "concurrencies runs a sweep."
        ),
    )
    p.add_argument(
        "--url",
        action="append",
        required=True,
        help="base URL (repeat to share requests round-robin, e.g. one per zone)",
    )
    p.add_argument("--model", required=True, help="served model name")
    shape = p.add_mutually_exclusive_group(required=True)
    shape.add_argument("--rate", help="requests/s (open loop); comma list = sweep")
    shape.add_argument("--concurrency", help="concurrent users (closed loop); comma list = sweep")
    p.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1 = Poisson)")
    p.add_argument("--duration", type=float, help="seconds of load (per sweep step)")
    p.add_argument("--requests", type=int, help="number of requests (per sweep step)")
    p.add_argument("--input-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64, help="max_tokens (with ignore_eos)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    p.add_argument("--slo", default="", help="goodput targets, e.g. ttft_ms=500,tpot_ms=50")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    p.add_argument(
        "--api-key-env",
        default="LAB_API_KEY",
        help="environment variable holding a bearer token (sent if set)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing an open-loop schedule (when one cannot keep up)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="open loop: cap on outstanding requests (0 = 4096); waits count as lag",
    )
    p.add_argument("--out", type=Path, help="write results as JSON (vllm bench serve field names)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_loadtest)

    m = subparsers.add_parser(
        "monitor",
        help="scrape /metrics periodically into a time-series CSV",
        description="Scrape vLLM /metrics every --interval s for --duration s; print balance "
        "and advice; write the series as CSV.",
    )
    source = m.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--url",
        action="append",
        help="[ZONE/GROUP=]URL of a leader (/metrics added when no path); repeatable",
    )
    source.add_argument(
        "--prometheus",
        metavar="URL",
        help="read the last --duration s from a Prometheus HTTP API instead (EKS)",
    )
    m.add_argument("--namespace", default="vllm-lab", help="with --prometheus: the lab namespace")
    m.add_argument("--interval", type=float, default=2.0)
    m.add_argument("--duration", type=float, default=30.0)
    m.add_argument("--out", type=Path, help="write the series as CSV")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(handler=_monitor)


def _numbers(text: str, flag: str, kind: type[float] | type[int]) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LoadTestError(f"{flag} {text!r}: give a number or a comma list of numbers") from None
    if not values:
        raise LoadTestError(f"{flag} {text!r}: give at least one value")
    return values


def _schedules(args: argparse.Namespace) -> list[Schedule]:
    if args.duration is None and args.requests is None:
        raise LoadTestError("unbounded load: give --duration S, --requests N or both")
    common = {
        "requests": args.requests,
        "duration_s": args.duration,
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
    }
    if args.rate is not None:
        return [
            open_loop(
                rate,
                arrival=args.arrival,
                burstiness=args.burstiness,
                seed=args.seed + step,
                **common,
            )
            for step, rate in enumerate(_numbers(args.rate, "--rate", float))
        ]
    return [
        closed_loop(users, seed=args.seed + step, **common)
        for step, users in enumerate(_numbers(args.concurrency, "--concurrency", int))
    ]


def _check_before_load(args: argparse.Namespace) -> None:
    # Fail before sending anything: a run whose results cannot be written is a lost measurement.
    for url in args.url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LoadTestError(
                f"--url {url!r} is not an http(s) URL; give e.g. http://127.0.0.1:8000"
            )
    if args.out is not None:
        if args.out.is_dir():
            raise LoadTestError(f"--out {args.out} is a folder; give a file name (results.json)")
        if not args.out.parent.is_dir():
            raise LoadTestError(
                f"--out {args.out}: folder {args.out.parent} does not exist; create it first"
            )


def _loadtest(args: argparse.Namespace) -> int:
    _check_before_load(args)
    slo = parse_slo(args.slo) if args.slo else None
    token = os.environ.get(args.api_key_env, "")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    results: list[tuple[str, LoadSummary]] = []
    for schedule in _schedules(args):
        result = run_load(
            schedule,
            args.url,
            args.model,
            endpoint=args.endpoint,
            stream=args.stream,
            timeout_s=args.timeout,
            headers=headers,
            progress=not args.no_progress,
            max_in_flight=args.max_in_flight,
            **({"workers": args.workers} if args.workers > 1 else {}),
        )
        summary = summarize(result, slo=slo)
        results.append((schedule.label(), summary))
        print(f"== {schedule.label()} against {', '.join(args.url)}")
        print(summary.table())
        print(summary.client.message)
    if len(results) > 1:
        table = sweep_frame(results)
        cols = [
            "step",
            "request_throughput",
            "output_throughput",
            "p50_ttft_ms",
            "p99_ttft_ms",
            "p99_e2el_ms",
            "failed",
            "client_on_schedule",
        ]
        print("== sweep")
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out:
        payload: Any = (
            results[0][1].to_json()
            if len(results) == 1
            else [{"step": label, **s.to_json()} for label, s in results]
        )
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}")
    if all(s.to_frame().iloc[0]["completed"] == 0 for _, s in results):
        first = results[0][1].to_json()
        raise EndpointError(
            f"no request succeeded against {', '.join(args.url)} "
            f"(first error: {(first['errors'] or ['?'])[0]}); check the URL and --model"
        )
    return 0


def _targets(urls: list[str]) -> dict[tuple[str, str], str]:
    targets: dict[tuple[str, str], str] = {}
    for raw in urls:
        name, sep, url = raw.partition("=")
        if not sep or "://" in name:
            name, url = "", raw
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EndpointError(f"--url {raw!r}: give http://HOST:PORT[/metrics]")
        if parts.path in ("", "/"):
            url = url.rstrip("/") + "/metrics"
        zone, _, group = name.partition("/")
        targets[(zone or "-", group or parts.netloc)] = url
    return targets


def _monitor(args: argparse.Namespace) -> int:
    if args.prometheus:
        end_s = time.time()
        series = prometheus_frame(
            args.prometheus,
            start_s=end_s - args.duration,
            end_s=end_s,
            step_s=args.interval,
            namespace=args.namespace,
        )
        if series.empty:
            raise EndpointError(f"{args.prometheus}: no samples in the last {args.duration:g} s")
    else:
        scrapes = run_sync(
            monitor_async(
                _targets(args.url),
                interval_s=args.interval,
                duration_s=args.duration,
                progress=not args.no_progress,
            )
        )
        if all(s.error for s in scrapes):
            raise EndpointError(f"every scrape failed; first: {scrapes[0].error}")
        series = metrics_frame(scrapes)
    last = series.sort_values("time_s").groupby(["zone", "group"]).tail(1)
    cols = [
        "zone",
        "group",
        "running",
        "waiting",
        "kv_cache_usage",
        "generation_tokens_per_s",
        "ttft_p95_s",
    ]
    print(last[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    dist = load_distribution(series)
    print(f"zone load balance (Jain index): {balance(dist['generation_tokens_per_s']):.2f}")
    if args.out:
        series.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0
