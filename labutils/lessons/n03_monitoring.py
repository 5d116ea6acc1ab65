"""Run a load test while watching the servers, compare client and server views, check lessons.

Notebook 03 (monitoring and load testing) and 04 (autoscaling) both need the same thing: an
open-loop load through the gateway while the group leaders' ``/metrics`` (and the LWS replica
counts) are sampled on one wall clock. :func:`run_monitored_load` does that for either target
(it only uses the :class:`~labutils.protocol.Backend` methods). The rest compares what the
client measured with what the servers' histograms say, and checks that the lessons hold on
the measured numbers (raising :class:`~labutils.errors.ValidationError` when they do not).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labutils.config import default_state_dir, lab_target, load_config
from labutils.errors import MetricsError, ValidationError, WaitTimeout
from labutils.loadtest import OUTCOMES, LoadSummary, LoadTestResult
from labutils.manifests.variants import render_variant
from labutils.metrics import prometheus as prom
from labutils.metrics.parse import Histogram, families, histograms
from labutils.metrics.series import histogram_quantile
from labutils.monitored_load import MonitoredRun, _Watchable
from labutils.protocol import Backend, MetricsScrape
from labutils.targets import get_backend

__all__ = [
    "SERVER_HISTOGRAMS",
    "PrometheusWindow",
    "bucket_of",
    "check_client_ttft_covers_server",
    "check_every_request_has_outcome",
    "check_percentiles_match",
    "check_promql_within_bucket",
    "check_quantiles_agree",
    "check_senders_agree",
    "check_sweep_past_knee",
    "client_server_ttft",
    "fixed_size_manifests",
    "histogram_bounds",
    "lab_backend",
    "lab_namespace",
    "latency_table",
    "outcome_counts",
    "prometheus_window",
    "server_histograms",
    "simulated_engines",
    "simulated_label",
]

# column prefix -> vLLM histogram family (exact names, vllm/v1/metrics/loggers.py)
SERVER_HISTOGRAMS: dict[str, str] = {
    "server_ttft": "vllm:time_to_first_token_seconds",
    "server_queue": "vllm:request_queue_time_seconds",
    "server_prefill": "vllm:request_prefill_time_seconds",
}


def fixed_size_manifests(out_dir: str | Path | None = None) -> Path:
    """Render ``manifests/`` without the zones' HPAs, so a measurement runs at a fixed size.

    An HPA would change the number of groups during the test (an idle zone scales down to
    ``minReplicas`` on its first sync), and the per-zone numbers would mix two sizes.

    Returns:
        The rendered folder (default ``<state dir>/../rendered-fixed-size``).
    """
    out = Path(out_dir) if out_dir else default_state_dir().parent / "rendered-fixed-size"
    return render_variant(out, hpa=False)


def lab_backend(target: str | None = None, *, prometheus_scrape_interval_s: float = 1.0) -> Backend:
    """``get_backend(target)``; on the twin its Prometheus scrapes every leader this often.

    The PodMonitor's 15 s would give a 10 s test one sample or none; a cluster's Prometheus
    keeps the PodMonitor's interval (the option does not apply on ``eks``).
    """
    if lab_target(target) == "local":
        return get_backend(target, scrape_interval_s=prometheus_scrape_interval_s)
    return get_backend(target)


def lab_namespace(backend: Any) -> str:
    """The namespace of the lab's objects (an EKS backend's own; the twin's is lab.yaml's)."""
    return str(getattr(backend, "namespace", "") or load_config().namespace)


# --- the run as Prometheus saw it -------------------------------------------------------
@dataclass(frozen=True)
class PrometheusWindow:
    """A load run as Prometheus saw it: from the last scrape before it to the first after it.

    Prometheus knows a counter only at its scrapes. A query over :attr:`window` evaluated at
    :attr:`end_s` therefore counts every request of the run (and whatever else the leaders
    served meanwhile) and nothing before or after it.
    """

    start_s: float  # the earliest leader's last scrape before the run (Unix seconds)
    end_s: float  # the latest leader's first scrape after the run's last answer
    scrapes: pd.DataFrame  # per leader: pod, zone, its two scrapes relative to the run

    @property
    def duration_s(self) -> float:
        """Seconds from :attr:`start_s` to :attr:`end_s`."""
        return self.end_s - self.start_s

    @property
    def window(self) -> str:
        """The PromQL range reaching back exactly to :attr:`start_s` from :attr:`end_s`.

        One millisecond longer, so the first scrape is inside the range whether the server
        treats its start as closed (Prometheus 2) or open (Prometheus 3).
        """
        return f"{round(self.duration_s * 1000) + 1}ms"


def prometheus_window(
    backend: Any,
    start_s: float,
    end_s: float,
    *,
    namespace: str | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.5,
) -> PrometheusWindow:
    """The scrapes that bracket a run from ``start_s`` to ``end_s`` (Unix seconds), per leader.

    Reads the raw samples of ``up`` (one per scrape, stamped with the scrape's time) and waits
    until every leader scraped before the run was scraped again after ``end_s``.

    Raises:
        MetricsError: no leader of ``namespace`` was scraped before the run (nothing to start
            the window from), or a ready leader was not.
        WaitTimeout: a leader was not scraped after the run within ``timeout_s``.
    """
    ns = namespace or lab_namespace(backend)
    selector = f'up{{namespace="{ns}", job="{ns}/vllm"}}'
    deadline = time.monotonic() + timeout_s
    while True:
        now = time.time()
        lookback_s = math.ceil(now - start_s) + 120  # reaches the last scrape before the run
        raw = prom.query(backend, f"{selector}[{lookback_s}s]", time_s=now, warn_empty=False)
        if raw.empty or "pod" not in raw:
            raise MetricsError(f"{selector}: no scrape of any leader in the last {lookback_s} s")
        before = raw[raw["time_s"] <= start_s].groupby("pod")["time_s"].max()
        after = raw[raw["time_s"] > end_s].groupby("pod")["time_s"].min()
        if before.empty:
            raise MetricsError(f"{selector}: no leader was scraped before the run began")
        missing = sorted(set(before.index) - set(after.index))
        if not missing:
            break
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"Prometheus did not scrape {', '.join(missing)} within {timeout_s:.0f} s after "
                "the run; is the leader still up (see its targets page)?"
            )
        time.sleep(poll_s)
    ready = {g.group for g in backend.endpoints().groups if g.ready}
    unseen = sorted(ready - set(before.index))
    if unseen:
        raise MetricsError(
            f"{', '.join(unseen)} had not been scraped when the run began, so Prometheus misses "
            "its first requests; wait for the scrape (prom.wait_scraped) and run the load again"
        )
    after = after[before.index]
    scrapes = pd.DataFrame({
        "pod": before.index,
        "zone": before.index.str.extract(prom.POD_ZONE_REGEX, expand=False),
        "last_scrape_before_start_s": (before - start_s).to_numpy(float),
        "first_scrape_after_end_s": (after - end_s).to_numpy(float),
    })  # fmt: skip
    return PrometheusWindow(float(before.min()), float(after.max()), scrapes)


def histogram_bounds(
    backend: Any, family: str, *, namespace: str | None = None, time_s: float | None = None
) -> np.ndarray:
    """The bucket upper bounds (``le``, seconds, ``inf`` last) of a histogram in Prometheus.

    Raises:
        MetricsError: the histogram has no series.
    """
    ns = namespace or lab_namespace(backend)
    promql = f'count by (le) ({family}_bucket{{namespace="{ns}"}})'
    frame = prom.query(backend, promql, time_s=time_s, warn_empty=False)
    if frame.empty or "le" not in frame:
        raise MetricsError(f"{promql}: no buckets; is {family} exported and scraped?")
    return np.sort(frame["le"].astype(float).to_numpy())


def bucket_of(value: float, bounds: Sequence[float]) -> tuple[float, float]:
    """The bucket ``(lower, upper]`` of ``bounds`` (sorted upper bounds) that holds ``value``.

    The lowest bucket starts at 0, as ``histogram_quantile`` assumes.
    """
    edges = np.asarray(bounds, dtype=float)
    i = min(int(np.searchsorted(edges, value, side="left")), len(edges) - 1)
    return (float(edges[i - 1]) if i > 0 else 0.0), float(edges[i])


# --- server histograms ------------------------------------------------------------------
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
    first: dict[str, dict[str, Histogram]] = {}
    first_s: dict[str, float] = {}
    ok_times = [s.time_s for s in scrapes if not s.error]
    cutoff_s = since_s if since_s is not None else min(ok_times, default=0.0)
    last: dict[str, tuple[str, dict[str, Histogram]]] = {}
    for scrape in sorted(scrapes, key=lambda s: s.time_s):
        if scrape.error:
            continue
        hists = histograms(scrape.text, where=f"/metrics of {scrape.group}")
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
                per[prefix] = hists[family].minus(base).plus(per.get(prefix))
    return out


def _lower_edge(q: float, hist: Histogram) -> float:
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
    first token, linearly interpolated), ``client_pQ_rank_ms`` (the client's ceil(q x n)-th
    TTFT: the request ``histogram_quantile``'s rank points at), ``server_pQ_ms``
    (``histogram_quantile`` of the servers' TTFT histogram over the run) and
    ``server_pQ_floor_ms`` (the lower edge of that quantile's bucket: what the histogram can
    vouch for). Means: ``client_mean_ms``, ``server_mean_ms`` and
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
            "server_mean_ms": ttft.total / ttft.count * 1e3 if ttft.count else math.nan,
            "server_queue_plus_prefill_mean_ms": (
                (queue.total / queue.count + prefill.total / prefill.count) * 1e3
                if queue.count and prefill.count
                else math.nan
            ),
        }
        for q in quantiles:
            name = f"p{round(q * 100):d}"
            row[f"client_{name}_ms"] = (
                float(np.percentile(client, q * 100) * 1e3) if client.size else math.nan
            )
            # histogram_quantile's rank q x count lands in the bucket of the ceil(q x n)-th value
            row[f"client_{name}_rank_ms"] = (
                float(np.percentile(client, q * 100, method="inverted_cdf") * 1e3)
                if client.size
                else math.nan
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
    + prefill time, and every client quantile (its ceil(q x n)-th TTFT, ``client_pQ_rank_ms``,
    where the table has it) is at least the lower edge of the server's bucket for that quantile
    (the client measures the same requests plus network, gateway and HTTP). Both sides must
    have counted the same number of requests.

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
            # The floor bounds the server's ceil(q x n)-th TTFT, so the client's ceil(q x n)-th
            # (each request's client TTFT includes its server TTFT) must reach it; a linearly
            # interpolated client quantile need not, when one request crosses the bound.
            ranked = f"client_{name}_rank_ms"
            client = row[ranked] if ranked in row else row[f"client_{name}_ms"]
            if not client + slack_ms >= row[column]:
                problems.append(
                    f"{zone}: client {name} TTFT {client:.1f} ms below the server's bucket "
                    f"floor {row[column]:.1f} ms"
                )
    if problems:
        raise ValidationError("client vs server TTFT: " + "; ".join(problems), problems)
    return f"OK: client TTFT >= server queue+prefill in all {len(table)} rows"


def check_promql_within_bucket(
    table: pd.DataFrame,
    *,
    server: str = "promql_ms",
    client: str = "client_ms",
    slack_ms: float = 25.0,
) -> str:
    """Prometheus's quantile and the client's agree within the width of the server's bucket.

    ``histogram_quantile`` interpolates linearly inside one bucket, so the server's value can be
    anywhere in ``bucket_from_ms``..``bucket_to_ms``; the client timed the same requests plus
    its own path (gateway hop, HTTP: ``slack_ms``, which matters only where buckets are a few
    milliseconds wide), so the two must not be further apart than that.

    Raises:
        ValidationError: no rows, or naming each zone/quantile where they differ by more.
    """
    if table.empty:
        raise ValidationError("no quantiles to compare: did Prometheus return any series?")
    problems = []
    for row in table.to_dict("records"):
        width = row["bucket_to_ms"] - row["bucket_from_ms"]
        gap = abs(row[server] - row[client])
        if not gap <= width + slack_ms:  # NaN fails too
            problems.append(
                f"{row['zone']} {row['metric']}: PromQL {row[server]:.1f} ms, client "
                f"{row[client]:.1f} ms, {gap:.1f} ms apart; bucket {row['bucket_from_ms']:g}.."
                f"{row['bucket_to_ms']:g} ms (+{slack_ms:g} ms for the client's path)"
            )
    if problems:
        raise ValidationError("PromQL vs client: " + "; ".join(problems), problems)
    gaps = (table[server] - table[client]).abs()
    widths = table["bucket_to_ms"] - table["bucket_from_ms"]
    return (
        f"OK: all {len(table)} PromQL quantiles within their bucket's width of the client's "
        f"(largest gap {gaps.max():.1f} ms; narrowest bucket {widths.min():g} ms)"
    )


def check_percentiles_match(table: pd.DataFrame, summary: LoadSummary, *, rel: float = 1e-6) -> str:
    """The per-zone percentiles computed in the notebook equal :func:`summarize`'s.

    Args:
        table: one row per zone (index) with ``<metric>_p<P>_ms`` columns (metric ``ttft``,
            ``tpot``, ``itl``, ``e2e``) and ``n_requests``.
        summary: :meth:`MonitoredRun.summary` of the same run.

    Raises:
        ValidationError: names the zone, the column and both numbers.
    """
    frame = latency_table(summary, scope="zone").set_index("zone")
    library = {str(k): v for k, v in frame.to_dict("index").items()}
    problems = []
    checked = 0
    for zone_key, row in table.iterrows():
        zone = str(zone_key)
        ref_row = library.get(zone)
        if ref_row is None:
            problems.append(f"zone {zone!r} is not in the library's summary")
            continue
        if int(row["n_requests"]) != int(ref_row["completed"]):
            problems.append(
                f"{zone}: {int(row['n_requests'])} requests counted, the summary completed "
                f"{int(ref_row['completed'])}"
            )
        for column in [c for c in table.columns if c.endswith("_ms") and "_p" in c]:
            metric, _, rest = column.partition("_p")
            theirs = f"p{rest.removesuffix('_ms')}_{'e2el' if metric == 'e2e' else metric}_ms"
            if theirs not in ref_row:
                continue
            mine, ref = float(row[column]), float(ref_row[theirs])
            checked += 1
            if not math.isclose(mine, ref, rel_tol=rel, abs_tol=1e-9):
                problems.append(f"{zone} {column}: {mine:.3f} here, {ref:.3f} in labutils")
    if problems or not checked:
        raise ValidationError(
            "percentiles: " + ("; ".join(problems) or "no percentile column to compare"), problems
        )
    return f"OK: {checked} percentiles in {len(table)} zones equal labutils.loadtest.summarize's"


def check_senders_agree(
    mine: pd.DataFrame | None, theirs: LoadTestResult, *, rel: float = 0.3, abs_ms: float = 20.0
) -> str:
    """A hand-written sender and :mod:`labutils.loadtest` measured the same schedule alike.

    Holds when both sent every request with HTTP 200 and their TTFT p50 differ by at most
    ``rel`` of the library's plus ``abs_ms`` (two runs of the same load on a busy 2-core
    machine; a sender that timed the wrong thing is off by far more).

    Returns:
        ``"not checkable ..."`` when ``mine`` is None (the hand-written sender did not run).

    Raises:
        ValidationError: a request failed or the medians differ by more than allowed.
    """
    if mine is None:
        return "not checkable here: the hand-written sender only runs against a 127.0.0.1 gateway"
    frame = theirs.to_frame()
    problems = []
    if len(mine) != len(frame):
        problems.append(f"{len(mine)} requests by hand, {len(frame)} by labutils")
    if (mine["status"] != 200).any() or (frame["outcome"] != "ok").any():
        problems.append("a request failed (every one should succeed at this rate)")
    p50_mine = float(mine["ttft_s"].median()) * 1e3
    p50_lib = float(frame["ttft_s"].median()) * 1e3
    if not abs(p50_mine - p50_lib) <= rel * p50_lib + abs_ms:
        problems.append(f"TTFT p50 {p50_mine:.0f} ms by hand vs {p50_lib:.0f} ms by labutils")
    if problems:
        raise ValidationError("senders disagree: " + "; ".join(problems), problems)
    return f"OK: TTFT p50 {p50_mine:.0f} ms by hand, {p50_lib:.0f} ms by labutils.loadtest"


def check_quantiles_agree(
    frame: pd.DataFrame, mine: str = "by_hand_ms", theirs: str = "labutils_ms"
) -> str:
    """Two columns of quantiles (e.g. computed by hand and by labutils) are equal.

    Raises:
        ValidationError: naming the first row that differs.
    """
    a = frame[mine].to_numpy(float)
    b = frame[theirs].to_numpy(float)
    same = np.isclose(a, b, rtol=1e-9, atol=1e-9) | (np.isnan(a) & np.isnan(b))
    if frame.empty or not same.all():
        first = frame[~same].head(1).to_dict("records")
        raise ValidationError(f"quantiles differ: {first or 'no rows to compare'}")
    return f"OK: all {len(frame)} quantiles equal ({mine} = {theirs})"


def check_sweep_past_knee(
    curve: pd.DataFrame, *, knee_gain: float = 0.5, min_ttft_rise: float = 1.5
) -> str:
    """The rate sweep went past the knee, and past it requests queued.

    Recomputes, from the sweep's rows, the marginal throughput gain of every step (achieved
    output tokens/s gained per offered token/s added). Holds when a step after the first gains
    less than ``knee_gain`` (throughput stopped rising: the knee is the step before it), the
    knee is not the first step (the sweep started below capacity), and at the last step TTFT
    p50 is at least ``min_ttft_rise`` x the first step's (requests waited in a queue).

    Raises:
        ValidationError: the sweep never flattened (add higher rates) or latency did not rise.
    """
    need = {"offered_rps", "offered_output_tokens_per_s", "achieved_output_tokens_per_s",
            "ttft_p50_ms"}  # fmt: skip
    if not need <= set(curve.columns) or len(curve) < 2:
        raise ValidationError(f"sweep: need at least 2 steps with columns {sorted(need)}")
    offered = curve["offered_output_tokens_per_s"].to_numpy(float)
    achieved = curve["achieved_output_tokens_per_s"].to_numpy(float)
    gains = np.diff(achieved) / np.diff(offered)
    flat = np.flatnonzero(gains < knee_gain)
    if flat.size == 0:
        raise ValidationError(
            f"sweep: achieved throughput still rose at every step (last gain {gains[-1]:.2f}); "
            "add higher rates to sweep_rates_rps"
        )
    knee = int(flat[0])  # the step before the first flat one
    if knee == 0:
        raise ValidationError(
            f"sweep: throughput gained only {gains[0]:.2f} from the first to the second step: "
            "the first rate is already at capacity; start sweep_rates_rps lower"
        )
    ttft = curve["ttft_p50_ms"].to_numpy(float)
    if not ttft[-1] >= min_ttft_rise * ttft[0]:
        raise ValidationError(
            f"sweep: TTFT p50 rose only {ttft[-1] / ttft[0]:.2f}x from the first to the last "
            f"step; past the knee requests should queue (>= {min_ttft_rise:g}x)"
        )
    rate = float(curve["offered_rps"].iloc[knee])
    return (
        f"OK: knee at {rate:g} req/s ({achieved[knee]:.0f} output tokens/s); the next step "
        f"gained {gains[knee]:.2f} token/s per offered token/s; TTFT p50 "
        f"{ttft[0]:.0f} -> {ttft[-1]:.0f} ms"
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
        for family in families(scrape.text, where=f"/metrics of {scrape.group}"):
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
