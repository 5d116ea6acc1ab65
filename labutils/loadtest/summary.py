"""Summaries of a load test: latency percentiles, throughput, goodput, errors, send lag.

Definitions (after vLLM's ``vllm bench serve``, ``vllm/benchmarks/serve.py``):
TTFT = send -> first content chunk; E2E = send -> last byte; TPOT = (E2E - TTFT) /
(output_tokens - 1); ITL = every gap between consecutive chunks, pooled; throughput over the
window from the first send to the last completion. Every scheduled request is counted: failed
ones appear in the error breakdown, never silently dropped from the denominators.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from labutils.errors import LoadTestError
from labutils.loadtest.schedule import Schedule
from labutils.loadtest.sender import OUTCOMES, LoadTestResult, RequestRecord, run_load

__all__ = [
    "LAG_P50_LIMIT_S",
    "LAG_P99_LIMIT_S",
    "PERCENTILES",
    "ClientHealth",
    "LoadSummary",
    "Slo",
    "client_health",
    "parse_slo",
    "run_sweep",
    "summarize",
    "sweep_frame",
]

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
# The sender counts as on schedule while the send lag stays under these (the target;
# inference-perf asks for a median under 10 ms).
LAG_P50_LIMIT_S = 0.002
LAG_P99_LIMIT_S = 0.010
# Achieved send rate below this share of the scheduled rate also means the client fell behind.
_RATE_SHARE_LIMIT = 0.98
_METRICS = ("ttft", "tpot", "itl", "e2e")


@dataclass(frozen=True)
class Slo:
    """Service-level targets; a request is *good* when it meets every target given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def is_set(self) -> bool:
        """True when at least one target is given."""
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))


def parse_slo(text: str) -> Slo:
    """Parse ``ttft_ms=500,tpot_ms=50`` (keys ttft_ms, tpot_ms, e2e_ms) into an :class:`Slo`."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or key.strip() not in ("ttft_ms", "tpot_ms", "e2e_ms"):
            raise LoadTestError(f"--slo {text!r}: use ttft_ms=N,tpot_ms=N,e2e_ms=N (got {part!r})")
        try:
            values[key.strip()] = float(raw)
        except ValueError:
            raise LoadTestError(f"--slo {text!r}: {raw!r} is not a number of ms") from None
    return Slo(**values)


@dataclass(frozen=True)
class ClientHealth:
    """Did the sender keep to its schedule? If not, the numbers describe the client."""

    requested_rate_rps: float
    achieved_send_rate_rps: float
    send_lag_p50_s: float
    send_lag_p99_s: float
    send_lag_max_s: float
    on_schedule: bool
    message: str
    cap_waits: int = 0


def client_health(result: LoadTestResult) -> ClientHealth:
    """Compare the scheduled and the actual send times of an open-loop run."""
    sched = np.array([r.scheduled_s for r in result.records])
    sent = np.array([r.sent_s for r in result.records])
    lag = sent - sched
    if len(sched) < 2 or not result.schedule.is_open_loop:
        nan = math.nan
        return ClientHealth(nan, nan, nan, nan, nan, True, "closed loop: no send schedule")
    requested = (len(sched) - 1) / max(sched[-1] - sched[0], 1e-9)
    achieved = (len(sent) - 1) / max(np.nanmax(sent) - np.nanmin(sent), 1e-9)
    p50, p99 = (float(v) for v in np.nanpercentile(lag, [50, 99]))
    lag_max = float(np.nanmax(lag))
    on_schedule = (
        p50 <= LAG_P50_LIMIT_S
        and p99 <= LAG_P99_LIMIT_S
        and achieved >= _RATE_SHARE_LIMIT * requested
    )
    capped = result.cap_waits
    on_schedule = on_schedule and capped == 0
    if on_schedule:
        message = (
            f"client on schedule: sent {achieved:,.0f} req/s (the schedule's own rate: "
            f"{requested:,.0f} req/s), "
            f"send lag p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
        )
    else:
        message = (
            f"CLIENT SATURATED: sent {achieved:,.0f} req/s of the schedule's {requested:,.0f}, "
            f"send lag p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {lag_max * 1e3:.0f} ms "
            f"(limits {LAG_P50_LIMIT_S * 1e3:g}/{LAG_P99_LIMIT_S * 1e3:g} ms): latencies from "
            "the send time understate what users would see; use fewer req/s per client"
        )
        if capped:
            message += (
                f"; the sender waited {capped} times for the in-flight cap "
                f"({result.max_in_flight}): "
                "raise max_in_flight if the server is just slow"
            )
    return ClientHealth(requested, achieved, p50, p99, lag_max, on_schedule, message, capped)


@dataclass
class LoadSummary:
    """The summary of one run: one row per scope (all, zone, group, endpoint)."""

    rows: pd.DataFrame
    result_json: dict[str, Any]
    client: ClientHealth

    def to_frame(self) -> pd.DataFrame:
        """One row per scope with counts, throughput, goodput and latency percentiles (ms)."""
        return self.rows

    def to_json(self) -> dict[str, Any]:
        """The run as JSON, with ``vllm bench serve``'s field names where meanings match."""
        return self.result_json

    def table(self) -> str:
        """A compact text table (the CLI prints it)."""
        cols = [
            "scope",
            "key",
            "requests",
            "completed",
            "failed",
            "request_throughput",
            "output_throughput",
            "p50_ttft_ms",
            "p99_ttft_ms",
            "p50_tpot_ms",
            "p99_itl_ms",
            "p50_e2el_ms",
            "p99_e2el_ms",
        ]
        if "request_goodput" in self.rows:
            cols.append("request_goodput")
        return self.rows[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}")


def _pct(values: np.ndarray, name: str, percentiles: Iterable[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    has = values.size > 0
    ms = values * 1e3
    out[f"mean_{name}_ms"] = float(ms.mean()) if has else math.nan
    out[f"std_{name}_ms"] = float(ms.std()) if has else math.nan
    out[f"median_{name}_ms"] = float(np.median(ms)) if has else math.nan
    for p in percentiles:
        out[f"p{p}_{name}_ms"] = float(np.percentile(ms, p)) if has else math.nan
    return out


def _is_good(frame: pd.DataFrame, slo: Slo) -> pd.Series:
    good = frame["outcome"].eq("ok")
    if slo.ttft_ms is not None:
        good &= frame["ttft_s"] * 1e3 <= slo.ttft_ms
    if slo.tpot_ms is not None:
        # One-token answers have no TPOT; they pass the TPOT target (as in vLLM's goodput).
        good &= frame["tpot_s"].isna() | (frame["tpot_s"] * 1e3 <= slo.tpot_ms)
    if slo.e2e_ms is not None:
        good &= frame["e2e_s"] * 1e3 <= slo.e2e_ms
    return good


def _scope_row(
    frame: pd.DataFrame,
    records: list[RequestRecord],
    window_s: float,
    slo: Slo,
    percentiles: tuple[int, ...],
) -> dict[str, Any]:
    ok = frame[frame["outcome"].eq("ok")]
    gaps = [np.diff(r.chunk_times_s) for r in records if r.outcome == "ok"]
    itl = np.concatenate(gaps) if gaps else np.zeros(0)
    output_tokens = float(ok["output_tokens"].fillna(0).sum())
    input_tokens = float(ok["prompt_tokens"].fillna(0).sum())
    row: dict[str, Any] = {
        "requests": len(frame),
        "completed": len(ok),
        "failed": len(frame) - len(ok),
        "total_input_tokens": int(input_tokens),
        "total_output_tokens": int(output_tokens),
        "request_throughput": len(ok) / window_s if window_s > 0 else math.nan,
        "output_throughput": output_tokens / window_s if window_s > 0 else math.nan,
        "total_token_throughput": (input_tokens + output_tokens) / window_s
        if window_s > 0
        else math.nan,
    }
    if slo.is_set():
        good = int(_is_good(frame, slo).sum())
        row["good_requests"] = good
        row["request_goodput"] = good / window_s if window_s > 0 else math.nan
        row["goodput_share"] = good / len(frame) if len(frame) else math.nan
    series = {
        "ttft": ok["ttft_s"].dropna().to_numpy(float),
        "tpot": ok["tpot_s"].dropna().to_numpy(float),
        "itl": itl,
        "e2el": ok["e2e_s"].dropna().to_numpy(float),
        "e2el_from_scheduled": ok["e2e_from_scheduled_s"].dropna().to_numpy(float),
        "send_lag": frame["send_lag_s"].dropna().to_numpy(float),
    }
    for name, values in series.items():
        row.update(_pct(values, name, percentiles))
    for outcome in OUTCOMES[1:]:
        row[f"n_{outcome}"] = int(frame["outcome"].eq(outcome).sum())
    return row


def summarize(
    result: LoadTestResult,
    *,
    slo: Slo | None = None,
    percentiles: tuple[int, ...] = PERCENTILES,
    warmup_s: float = 0.0,
) -> LoadSummary:
    """Summarize every request of ``result`` overall and per zone, group and endpoint.

    Args:
        result: from :func:`~labutils.loadtest.sender.run_load`.
        slo: targets for goodput (requests meeting all of them); omitted -> no goodput.
        percentiles: which percentiles to report (median and mean always).
        warmup_s: leave out requests scheduled in the first ``warmup_s`` seconds.

    Raises:
        LoadTestError: the run recorded no requests (after the warm-up).
    """
    if warmup_s > 0:
        kept = [r for r in result.records if r.scheduled_s >= warmup_s]
        result = replace(result, records=kept)
    if not result.records:
        raise LoadTestError(
            f"load test against {result.url} recorded no requests after a {warmup_s:g} s "
            "warm-up: run longer or lower warmup_s"
        )
    slo = slo or Slo()
    frame = result.to_frame()
    sent = frame["sent_s"].dropna()
    ends = (
        frame.loc[frame["outcome"].eq("ok"), "sent_s"]
        + frame.loc[frame["outcome"].eq("ok"), "e2e_s"]
    )
    window_s = float(ends.max() - sent.min()) if len(ends) else math.nan
    by_index = {r.index: r for r in result.records}
    rows = []
    scopes: list[tuple[str, str, pd.DataFrame]] = [("all", "*", frame)]
    for column in ("zone", "group", "endpoint"):
        for key, part in frame.groupby(column, sort=True):
            scopes.append((column, str(key) or "(none)", part))
    for scope, key, part in scopes:
        records = [by_index[i] for i in part["index"]]
        rows.append(
            {"scope": scope, "key": key, **_scope_row(part, records, window_s, slo, percentiles)}
        )
    table = pd.DataFrame(rows)
    health = client_health(result)
    overall = rows[0]
    schedule = result.schedule
    errors = frame.loc[~frame["outcome"].eq("ok"), "error"].tolist()
    result_json: dict[str, Any] = {
        "date": datetime.fromtimestamp(result.started_at, UTC).strftime("%Y%m%d-%H%M%S"),
        "backend": "openai-completions-stream" if result.stream else "openai-completions",
        "model_id": result.model,
        "base_url": result.url,
        "num_prompts": len(result.records),
        "request_rate": schedule.rate_rps if schedule.is_open_loop else "inf",
        "burstiness": schedule.burstiness,
        "max_concurrency": schedule.concurrency,
        "arrival": schedule.arrival,
        "seed": schedule.seed,
        "duration": window_s,
        **{k: v for k, v in overall.items() if k not in ("requests",)},
        "input_lens": frame["prompt_tokens"].fillna(0).astype(int).tolist(),
        "output_lens": frame["output_tokens"].fillna(0).astype(int).tolist(),
        "ttfts": frame["ttft_s"].fillna(0.0).tolist(),
        "itls": [
            np.diff(r.chunk_times_s).tolist() if r.outcome == "ok" else [] for r in result.records
        ],
        "errors": [e for e in errors],
        "outcomes": frame["outcome"].tolist(),
        "zones": frame["zone"].tolist(),
        "groups": frame["group"].tolist(),
        "send_lags": frame["send_lag_s"].tolist(),
        "slo": {k: v for k, v in vars(slo).items() if v is not None},
        "client": vars(health),
        "per_scope": table.iloc[1:].to_dict(orient="records"),
    }
    return LoadSummary(rows=table, result_json=_json_safe(result_json), client=health)


def sweep_frame(summaries: Iterable[tuple[str, LoadSummary]]) -> pd.DataFrame:
    """One row per sweep step (its label and overall summary), for latency–throughput plots."""
    rows = []
    for label, summary in summaries:
        row = summary.rows.iloc[0].to_dict()
        row["step"] = label
        row["requested_rate_rps"] = summary.client.requested_rate_rps
        row["client_on_schedule"] = summary.client.on_schedule
        rows.append(row)
    return pd.DataFrame(rows)


def run_sweep(
    steps: Iterable[Schedule],
    url: str | Sequence[str],
    model: str,
    *,
    slo: Slo | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Run each schedule of a sweep in turn and return :func:`sweep_frame` of their summaries.

    ``options`` go to :func:`~labutils.loadtest.sender.run_load` (``timeout_s``, ``stream``...).
    """
    summaries = [
        (step.label(), summarize(run_load(step, url, model, **options), slo=slo)) for step in steps
    ]
    return sweep_frame(summaries)


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if value is pd.NA:
        return None
    return value
