"""Run a load test while watching the servers, compare client and server views, check lessons.

Notebook 03 (monitoring and load testing) and 04 (autoscaling) both need the same thing: an
open-loop load through the gateway while the group leaders' ``/metrics`` (and the LWS replica
counts) are sampled on one wall clock. :func:`run_monitored_load` does that for either target
(it only uses the :class:`~labutils.backend.Backend` methods). The rest compares what the
client measured with what the servers' histograms say, and checks that the lessons hold on
the measured numbers (raising :class:`~labutils.errors.ValidationError` when they do not).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from prometheus_client.parser import text_string_to_metric_families
from tqdm.auto import tqdm

from labutils._aio import run_sync
from labutils.backend import Endpoints, MetricsScrape
from labutils.config import default_state_dir
from labutils.errors import LoadTestError, MetricsError, ValidationError
from labutils.loadtest import OUTCOMES, LoadSummary, LoadTestResult, Schedule, summarize
from labutils.loadtest.sender import run_load_async
from labutils.manifests import render
from labutils.monitoring import histogram_quantile, metrics_frame
from labutils.plots import knee_index

__all__ = [
    "SERVER_HISTOGRAMS",
    "MonitoredRun",
    "check_client_ttft_covers_server",
    "check_every_request_has_outcome",
    "check_latency_rises_past_knee",
    "client_server_ttft",
    "fixed_size_manifests",
    "latency_table",
    "outcome_counts",
    "plot_percentiles",
    "plot_server_timeline",
    "run_monitored_load",
    "server_histograms",
    "simulated_engines",
    "simulated_label",
]

# column prefix -> vLLM histogram family (exact names, shared/reference/vllm-metrics.md)
SERVER_HISTOGRAMS: dict[str, str] = {
    "server_ttft": "vllm:time_to_first_token_seconds",
    "server_queue": "vllm:request_queue_time_seconds",
    "server_prefill": "vllm:request_prefill_time_seconds",
}


_FINAL_SCRAPE_TRIES = 10


class _Watchable(Protocol):
    def scrape_metrics(self) -> list[MetricsScrape]: ...

    def status(self) -> pd.DataFrame: ...

    def endpoints(self) -> Endpoints: ...


@dataclass
class MonitoredRun:
    """One load run and what the servers reported meanwhile, on one wall clock (``time_s``)."""

    result: LoadTestResult
    scrapes: list[MetricsScrape]
    replicas: pd.DataFrame  # time_s, zone, lws, replicas, ready_replicas (LWS status polled)
    started_at: float  # wall clock of the load's offset 0

    @property
    def series(self) -> pd.DataFrame:
        """:func:`labutils.monitoring.metrics_frame` of the scrapes taken during the run."""
        return metrics_frame(self.scrapes)

    def summary(self, **options: Any) -> LoadSummary:
        """:func:`labutils.loadtest.summarize` of the load (options: ``slo``, ``warmup_s``)."""
        return summarize(self.result, **options)

    def to_frame(self) -> pd.DataFrame:
        """One row per request (the load test's frame) with ``sent_time_s`` on the wall clock."""
        frame = self.result.to_frame()
        frame["sent_time_s"] = self.started_at + frame["sent_s"]
        return frame


async def _watch(
    backend: _Watchable,
    schedule: Schedule,
    interval_s: float,
    settle_s: float,
    settle_until: Callable[[pd.DataFrame], bool] | None,
    load_options: dict[str, Any],
) -> MonitoredRun:
    endpoints = await asyncio.to_thread(backend.endpoints)
    scrapes: list[MetricsScrape] = []
    statuses: list[pd.DataFrame] = []

    async def sample() -> pd.DataFrame:
        got, status = await asyncio.gather(
            asyncio.to_thread(backend.scrape_metrics), asyncio.to_thread(backend.status)
        )
        scrapes.extend(got)
        stamped = status.assign(time_s=time.time())
        statuses.append(stamped)
        return stamped

    await sample()  # the baseline: histogram deltas start here
    baseline_count = len(scrapes)
    started_at = time.time()
    load = asyncio.create_task(
        run_load_async(
            schedule, endpoints.gateway_url, endpoints.model, headers=endpoints.headers,
            **load_options,
        )
    )  # fmt: skip
    while not load.done():
        await asyncio.wait({load}, timeout=interval_s)
        if not load.done():
            await sample()
    result = load.result()
    # After the last response every request is in the histograms, but only the leaders that
    # answer get scraped (a readiness blip on a loaded machine drops one for a round): retry
    # briefly until every leader of the baseline round answered again.
    baseline = {s.group for s in scrapes[:baseline_count] if not s.error}
    for _ in range(_FINAL_SCRAPE_TRIES):
        before = len(scrapes)
        status = await sample()
        if baseline <= {s.group for s in scrapes[before:] if not s.error}:
            break
        await asyncio.sleep(0.5)
    deadline = time.monotonic() + settle_s
    with tqdm(total=max(settle_s, 0.0), desc="watching after the load", unit="s",
              leave=False, disable=settle_s <= 0) as bar:  # fmt: skip
        begin = time.monotonic()
        while time.monotonic() < deadline and not (settle_until and settle_until(status)):
            await asyncio.sleep(interval_s)
            status = await sample()
            bar.n = round(min(time.monotonic() - begin, settle_s), 1)
            bar.refresh()
    columns = ["time_s", "zone", "lws", "replicas", "ready_replicas"]
    replicas = pd.concat([s[columns] for s in statuses], ignore_index=True)
    return MonitoredRun(result, scrapes, replicas, started_at)


def run_monitored_load(
    backend: _Watchable,
    schedule: Schedule,
    *,
    interval_s: float = 1.0,
    settle_s: float = 0.0,
    settle_until: Callable[[pd.DataFrame], bool] | None = None,
    **load_options: Any,
) -> MonitoredRun:
    """Send ``schedule`` through the gateway while scraping every leader every ``interval_s``.

    Args:
        backend: any :class:`~labutils.backend.Backend` (twin or EKS).
        schedule: an open- or closed-loop schedule (bounded, see ``labutils.loadtest``).
        interval_s: scrape and status period.
        settle_s: keep watching this long after the last response (e.g. for a scale-down).
        settle_until: stop watching early once this returns True for the latest
            ``backend.status()`` frame.
        **load_options: for :func:`labutils.loadtest.run_load_async` (``timeout_s``...).
    """
    if not interval_s > 0 or settle_s < 0:
        raise LoadTestError(f"interval_s={interval_s} must be > 0 and settle_s={settle_s} >= 0")
    return run_sync(_watch(backend, schedule, interval_s, settle_s, settle_until, load_options))


def fixed_size_manifests(out_dir: str | Path | None = None) -> Path:
    """Render ``manifests/`` without the zones' HPAs, so a measurement runs at a fixed size.

    An HPA would change the number of groups during the test (an idle zone scales down to
    ``minReplicas`` on its first sync), and the per-zone numbers would mix two sizes.

    Returns:
        The rendered folder (default ``<state dir>/../rendered-fixed-size``).
    """
    out = Path(out_dir) if out_dir else default_state_dir().parent / "rendered-fixed-size"
    render(out_dir=out)
    for hpa in (out / "zones").glob("*/hpa.yaml"):
        hpa.unlink()
    return out


# --- server histograms ------------------------------------------------------------------
@dataclass(frozen=True)
class _Hist:
    bounds: np.ndarray
    cumulative: np.ndarray
    total_s: float
    count: float


def _histograms(text: str) -> dict[str, _Hist]:
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                per = buckets.setdefault(family.name, {})
                bound = float(sample.labels["le"])
                per[bound] = per.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[family.name] = sums.get(family.name, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[family.name] = counts.get(family.name, 0.0) + sample.value
    return {
        name: _Hist(
            np.array(sorted(per)),
            np.array([per[k] for k in sorted(per)]),
            sums.get(name, 0.0),
            counts.get(name, 0.0),
        )
        for name, per in buckets.items()
    }


def _delta(new: _Hist, old: _Hist | None) -> _Hist:
    if old is None or not np.array_equal(new.bounds, old.bounds) or new.count < old.count:
        return new  # no baseline, or the engine restarted (counters reset)
    return _Hist(new.bounds, new.cumulative - old.cumulative, new.total_s - old.total_s,
                 new.count - old.count)  # fmt: skip


def _add(a: _Hist | None, b: _Hist) -> _Hist:
    if a is None:
        return b
    if not np.array_equal(a.bounds, b.bounds):
        raise MetricsError("histograms with different buckets cannot be added; same vLLM?")
    return _Hist(a.bounds, a.cumulative + b.cumulative, a.total_s + b.total_s, a.count + b.count)


def server_histograms(
    scrapes: Sequence[MetricsScrape], *, since_s: float | None = None, by: str = "zone"
) -> dict[str, dict[str, Any]]:
    """Per zone (or ``all``): each :data:`SERVER_HISTOGRAMS` family over the run.

    A group's observations are its last scrape minus its first one taken before ``since_s``
    (the load's start); a group first scraped later (started during the run)
    counts from zero. Returns ``{key: {prefix: histogram}}`` (opaque:
    read them with :func:`client_server_ttft`).

    Raises:
        MetricsError: no scrape succeeded, or a family is missing (named).
    """
    first: dict[str, dict[str, _Hist]] = {}
    first_s: dict[str, float] = {}
    ok_times = [s.time_s for s in scrapes if not s.error]
    cutoff_s = since_s if since_s is not None else min(ok_times, default=0.0)
    last: dict[str, tuple[str, dict[str, _Hist]]] = {}
    for scrape in sorted(scrapes, key=lambda s: s.time_s):
        if scrape.error:
            continue
        hists = _histograms(scrape.text)
        for family in SERVER_HISTOGRAMS.values():
            if family not in hists:
                raise MetricsError(
                    f"metric {family} missing from /metrics of {scrape.group} ({scrape.zone}); "
                    "is this a vLLM >= 0.10 server?"
                )
        first.setdefault(scrape.group, hists)
        first_s.setdefault(scrape.group, scrape.time_s)
        last[scrape.group] = (scrape.zone, hists)
    if not last:
        raise MetricsError("no successful /metrics scrape during the run; is the backend up?")
    out: dict[str, dict[str, Any]] = {}
    for group, (zone, hists) in last.items():
        keys = ["all", zone] if by == "zone" else ["all"]
        for key in keys:
            per = out.setdefault(key, {})
            for prefix, family in SERVER_HISTOGRAMS.items():
                baseline = first[group] if first_s[group] <= cutoff_s else None
                base = baseline[family] if baseline is not None else None
                per[prefix] = _add(per.get(prefix), _delta(hists[family], base))
    return out


def _lower_edge(q: float, hist: _Hist) -> float:
    """The lower bound of the bucket that holds the ``q`` quantile (the histogram's resolution)."""
    total = float(hist.cumulative[-1]) if len(hist.cumulative) else 0.0
    if total <= 0:
        return math.nan
    index = int(np.searchsorted(hist.cumulative, q * total, side="left"))
    return float(hist.bounds[index - 1]) if index > 0 else 0.0


def client_server_ttft(
    run: MonitoredRun, quantiles: Sequence[float] = (0.5, 0.9, 0.99)
) -> pd.DataFrame:
    """Client-measured TTFT beside the servers' own histograms, per zone and overall (ms).

    Columns per quantile ``q``: ``client_pQ_ms`` (from every successful request's send to its
    first token), ``server_pQ_ms`` (``histogram_quantile`` of the servers' TTFT histogram
    over the run) and ``server_pQ_floor_ms`` (the lower edge of that quantile's bucket: what the
    histogram can vouch for). Means: ``client_mean_ms``, ``server_mean_ms`` and
    ``server_queue_plus_prefill_mean_ms`` (means add up, quantiles do not), plus the
    requests each side counted.
    """
    hists = server_histograms(run.scrapes, since_s=run.started_at)
    frame = run.to_frame()
    ok = frame[frame["outcome"].eq("ok")]
    rows = []
    for key in ["all", *sorted(k for k in hists if k != "all")]:
        part = ok if key == "all" else ok[ok["zone"].eq(key)]
        client = part["ttft_s"].dropna().to_numpy(float)
        per = hists[key]
        ttft, queue, prefill = per["server_ttft"], per["server_queue"], per["server_prefill"]
        row: dict[str, Any] = {
            "zone": key,
            "client_requests": int(client.size),
            "server_requests": round(ttft.count),
            "client_mean_ms": float(client.mean() * 1e3) if client.size else math.nan,
            "server_mean_ms": ttft.total_s / ttft.count * 1e3 if ttft.count else math.nan,
            "server_queue_plus_prefill_mean_ms": (
                (queue.total_s / queue.count + prefill.total_s / prefill.count) * 1e3
                if queue.count and prefill.count
                else math.nan
            ),
        }
        for q in quantiles:
            name = f"p{round(q * 100):d}"
            row[f"client_{name}_ms"] = (
                float(np.percentile(client, q * 100) * 1e3) if client.size else math.nan
            )
            row[f"server_{name}_ms"] = histogram_quantile(q, ttft.bounds, ttft.cumulative) * 1e3
            row[f"server_{name}_floor_ms"] = _lower_edge(q, ttft) * 1e3
        rows.append(row)
    return pd.DataFrame(rows)


# --- checks ------------------------------------------------------------------------------
def outcome_counts(result: LoadTestResult) -> pd.DataFrame:
    """How many scheduled requests ended in each outcome (every outcome listed, zeros too)."""
    frame = result.to_frame()
    counts = frame["outcome"].value_counts() if not frame.empty else pd.Series(dtype=int)
    return pd.DataFrame(
        {"outcome": list(OUTCOMES), "requests": [int(counts.get(o, 0)) for o in OUTCOMES]}
    )


def check_every_request_has_outcome(
    result: LoadTestResult, *, max_failed_share: float = 0.0
) -> str:
    """Every scheduled request was sent and ended in exactly one known outcome.

    Args:
        max_failed_share: the share of non-``ok`` outcomes tolerated (0: none).

    Raises:
        ValidationError: a request is missing, unsent or unknown, or too many failed.
    """
    planned = result.schedule.num_requests
    records = result.records
    problems = []
    if planned is not None and len(records) != planned:
        problems.append(f"{len(records)} records for {planned} scheduled requests")
    indexes = [r.index for r in records]
    if len(set(indexes)) != len(indexes):
        problems.append("a request index appears twice")
    unknown = sorted({r.outcome for r in records} - set(OUTCOMES))
    if unknown:
        problems.append(f"unknown outcomes {unknown}")
    unsent = sum(1 for r in records if math.isnan(r.sent_s))
    if unsent:
        problems.append(f"{unsent} requests never sent")
    failed = sum(1 for r in records if r.outcome != "ok")
    if records and failed / len(records) > max_failed_share:
        problems.append(
            f"{failed} of {len(records)} requests failed (allowed share {max_failed_share:g})"
        )
    if problems:
        raise ValidationError(f"load test against {result.url}: " + "; ".join(problems), problems)
    return (
        f"OK: all {len(records)} scheduled requests sent, each with one outcome ({failed} failed)"
    )


def check_client_ttft_covers_server(table: pd.DataFrame, *, slack_ms: float = 1.0) -> str:
    """The client's TTFT includes the server's: never below it within histogram resolution.

    Per row of :func:`client_server_ttft`: the client mean is at least the server's mean queue
    + prefill time, and every client quantile is at least the lower edge of the server's
    bucket for that quantile (the client measures the same requests plus network, gateway and
    HTTP). Both sides must have counted the same number of requests.

    Raises:
        ValidationError: naming the zone, the quantile and both numbers.
    """
    problems = []
    for _, row in table.iterrows():
        zone = row["zone"]
        if row["client_requests"] != row["server_requests"]:
            problems.append(
                f"{zone}: client saw {row['client_requests']} successful requests, the servers "
                f"{row['server_requests']} (was another load running?)"
            )
        if not row["client_mean_ms"] + slack_ms >= row["server_queue_plus_prefill_mean_ms"]:
            problems.append(
                f"{zone}: client mean TTFT {row['client_mean_ms']:.1f} ms < server queue+prefill "
                f"{row['server_queue_plus_prefill_mean_ms']:.1f} ms"
            )
        for column in [c for c in table.columns if c.endswith("_floor_ms")]:
            name = column.removeprefix("server_").removesuffix("_floor_ms")
            client = row[f"client_{name}_ms"]
            if not client + slack_ms >= row[column]:
                problems.append(
                    f"{zone}: client {name} TTFT {client:.1f} ms below the server's bucket "
                    f"floor {row[column]:.1f} ms"
                )
    if problems:
        raise ValidationError("client vs server TTFT: " + "; ".join(problems), problems)
    return f"OK: client TTFT >= server queue+prefill in all {len(table)} rows"


def check_latency_rises_past_knee(
    sweep: pd.DataFrame,
    *,
    latency: str = "p99_e2el_ms",
    throughput: str = "output_throughput",
    min_rise: float = 1.5,
) -> str:
    """Past the knee of the latency–throughput curve latency climbs by at least ``min_rise``x.

    The knee is :func:`labutils.plots.knee_index` (the one the plot marks). Compares the highest
    step's latency with the knee's.

    Raises:
        ValidationError: no step after the knee (extend the rates) or latency did not rise.
    """
    data = sweep.sort_values(throughput).reset_index(drop=True)
    knee = knee_index(data[throughput], data[latency])
    top = int(data[latency].to_numpy(float).argmax())
    values = data[latency].to_numpy(float)
    at_knee, highest = float(values[knee]), float(values[top])
    label = str(data["step"].iloc[knee]) if "step" in data else str(knee)
    knee_throughput = float(data[throughput].iloc[knee])
    if top <= knee:
        raise ValidationError(
            f"sweep: the highest {latency} is at or before the knee ({label}); add higher rates"
        )
    if not highest >= min_rise * at_knee:
        raise ValidationError(
            f"sweep: {latency} rose only {highest / at_knee:.2f}x past the knee ({label}: "
            f"{at_knee:.0f} -> {highest:.0f}); need >= {min_rise:g}x: add higher rates"
        )
    return (
        f"OK: knee at {label} ({knee_throughput:.0f} {throughput}, {latency} "
        f"{at_knee:.0f}); past it {latency} reaches {highest:.0f} ({highest / at_knee:.1f}x)"
    )


# --- what is serving --------------------------------------------------------------------
def simulated_engines(backend: _Watchable) -> pd.DataFrame:
    """One row per ready group leader: zone, group, and what its ``/metrics`` say it is.

    Simulated engines publish ``lab_sim_info{gpu,model,tensor_parallel_size,...}``; a real vLLM
    does not, so ``simulated`` is False there and the GPU/model columns are empty.
    """
    rows = []
    for scrape in backend.scrape_metrics():
        row: dict[str, Any] = {"zone": scrape.zone, "group": scrape.group, "simulated": False,
                               "gpu": "", "model": "", "tensor_parallel_size": "",
                               "pipeline_parallel_size": ""}  # fmt: skip
        if scrape.error:
            raise MetricsError(f"/metrics of {scrape.group} ({scrape.zone}): {scrape.error}")
        for family in text_string_to_metric_families(scrape.text):
            if family.name == "lab_sim_info" and family.samples:
                labels = family.samples[0].labels
                row.update({k: labels.get(k, "") for k in ("gpu", "model",
                            "tensor_parallel_size", "pipeline_parallel_size")})  # fmt: skip
                row["simulated"] = True
        rows.append(row)
    return pd.DataFrame(rows)


def simulated_label(engines: pd.DataFrame) -> str:
    """``"simulated 4 x A10G ... serving MODEL"`` for plot titles ('' for real engines)."""
    sim = engines[engines["simulated"]] if "simulated" in engines else engines.iloc[0:0]
    if sim.empty:
        return ""
    first = sim.iloc[0]
    return (
        f"simulated {first['gpu']} engines (TP={first['tensor_parallel_size']}, "
        f"PP={first['pipeline_parallel_size']}) serving {first['model']}"
    )


def latency_table(summary: LoadSummary, *, scope: str = "zone") -> pd.DataFrame:
    """Requests and TTFT/TPOT/ITL/E2E percentiles (ms): overall and one row per ``scope``."""
    frame = summary.to_frame()
    rows = frame[frame["scope"].isin(["all", scope])]
    columns = ["key", "requests", "completed", "failed", "request_throughput"]
    for metric in ("ttft", "tpot", "itl", "e2el"):
        columns += [f"p{p}_{metric}_ms" for p in (50, 90, 99)]
    return rows[columns].rename(columns={"key": scope}).reset_index(drop=True)


# --- plot --------------------------------------------------------------------------------
def plot_percentiles(summary: LoadSummary, *, scope: str = "zone", note: str = "") -> Figure:
    """TTFT, TPOT, ITL and E2E percentile bars (ms) per zone, one panel each."""
    frame = summary.to_frame()
    rows = frame[frame["scope"].eq(scope)]
    percentiles = (50, 90, 99)
    fig = Figure(figsize=(10, 6))
    axes = fig.subplots(2, 2).ravel()
    width = 0.8 / len(percentiles)
    x = np.arange(len(rows))
    for ax, metric in zip(axes, ("ttft", "tpot", "itl", "e2el"), strict=True):
        for i, p in enumerate(percentiles):
            ax.bar(x + i * width, rows[f"p{p}_{metric}_ms"].to_numpy(float), width, label=f"p{p}")
        ax.set_xticks(x + width, rows["key"].astype(str).tolist(), fontsize="small")
        ax.set_ylabel(f"{metric.upper().replace('E2EL', 'E2E')} (ms)")
    axes[0].legend(fontsize="small", ncols=3)
    fig.suptitle(f"Latency percentiles per {scope}" + (f" — {note}" if note else ""),
                 fontsize="medium")  # fmt: skip
    fig.tight_layout()
    return fig


def _round_times(times_s: np.ndarray, gap_s: float = 0.25) -> np.ndarray:
    """Each time replaced by the first time of its round (a new round after a gap > gap_s)."""
    order = np.argsort(times_s)
    out = np.empty_like(times_s)
    current = math.nan
    previous = -math.inf
    for index in order:
        t = times_s[index]
        if t - previous > gap_s:
            current = t
        out[index] = current
        previous = t
    return out


def plot_server_timeline(run: MonitoredRun, *, title: str = "") -> Figure:
    """Four panels on one clock: waiting, running, KV-cache usage per zone, and TTFT.

    The TTFT panel puts the servers' per-interval p50/p95 (from histogram deltas, all zones)
    beside every request's client-measured TTFT at its send time.
    """
    series = run.series
    ok = series[series["error"].eq("")].copy()
    # one scrape round = the scrapes of all leaders taken together (times differ by ms)
    ok["time_s"] = _round_times(ok["time_s"].to_numpy(float))
    start = run.started_at
    fig = Figure(figsize=(8.5, 8))
    axes = fig.subplots(4, 1, sharex=True)
    for zone, part in ok.groupby("zone", sort=True):
        by_time = part.groupby("time_s")
        t = by_time.size().index.to_numpy(float) - start
        axes[0].plot(t, by_time["waiting"].sum().to_numpy(float), label=str(zone))
        axes[1].plot(t, by_time["running"].sum().to_numpy(float), label=str(zone))
        axes[2].plot(t, by_time["kv_cache_usage"].mean().to_numpy(float) * 100, label=str(zone))
    requests = run.to_frame()
    good = requests[requests["outcome"].eq("ok")]
    axes[3].scatter(good["sent_s"], good["ttft_s"] * 1e3, s=6, alpha=0.4, color="grey",
                    label="client TTFT (each request, at send)")  # fmt: skip
    by_time = ok.groupby("time_s")
    t = by_time.size().index.to_numpy(float) - start
    for column, style in (("ttft_p50_s", "-"), ("ttft_p95_s", "--")):
        values = by_time[column].mean().to_numpy(float) * 1e3
        axes[3].plot(t, values, style, color="tab:red",
                     label=f"server {column.removesuffix('_s')} (per scrape interval)")  # fmt: skip
    axes[0].set_ylabel("waiting\n(requests)")
    axes[1].set_ylabel("running\n(requests)")
    axes[2].set_ylabel("KV-cache\nusage (%)")
    axes[3].set_ylabel("TTFT (ms)")
    axes[3].set_xlabel("time since the load started (s)")
    axes[0].legend(fontsize="small", ncols=4)
    axes[3].legend(fontsize="x-small")
    fig.suptitle(title or "Server-side metrics during the load (scraped /metrics)")
    fig.tight_layout()
    return fig
