"""Turn ``/metrics`` scrapes of group leaders into time series, load balance and advice.

Scrapes are :class:`labutils.protocol.MetricsScrape` (text + zone/group/time), from
``backend.scrape_metrics()`` or :func:`scrape_urls`. Parsing uses ``prometheus_client``'s text
parser. Per group and scrape the series frame holds gauges (running, waiting, KV-cache usage),
counter rates between consecutive scrapes (tokens/s, requests/s) and latency quantiles computed
from histogram bucket *deltas* (the observations made between two scrapes), like PromQL's
``histogram_quantile(q, rate(..._bucket[w]))``.

Metric names are matched exactly (vLLM's ``vllm/v1/metrics/loggers.py``): a missing series is a
:class:`~labutils.errors.MetricsError` naming it (and its renamed successor when the scrape uses
an old name), never a silent zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labutils.errors import ConfigError, MetricsError
from labutils.kube.hpa import MetricSpec, PodSample, hpa_spec_from_manifest, replicas_for_metric
from labutils.metrics.parse import ParsedScrape, _require, parse_scrape
from labutils.protocol import MetricsScrape

__all__ = [
    "GAUGES",
    "HISTOGRAMS",
    "RATES",
    "balance",
    "histogram_quantile",
    "load_distribution",
    "metrics_frame",
    "recommendations",
]

# column -> metric family (exact current names; counters without the _total suffix, as the
# parser reports them).
GAUGES: dict[str, str] = {
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
}
RATES: dict[str, str] = {
    "prompt_tokens_per_s": "vllm:prompt_tokens",
    "generation_tokens_per_s": "vllm:generation_tokens",
    "requests_per_s": "vllm:request_success",
}
HISTOGRAMS: dict[str, str] = {
    "ttft": "vllm:time_to_first_token_seconds",
    "itl": "vllm:inter_token_latency_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
}
# HPA metric names (through prometheus-adapter) -> series column.
_HPA_METRICS: dict[str, str] = {
    "vllm_num_requests_waiting": "waiting",
    "vllm_num_requests_running": "running",
    "vllm_kv_cache_usage_perc": "kv_cache_usage",
}


def histogram_quantile(q: float, bounds: np.ndarray, cumulative: np.ndarray) -> float:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly within a bucket.

    Follows Prometheus's ``histogram_quantile``: the lower edge of the first bucket is 0, a
    quantile in the ``+Inf`` bucket returns the highest finite bound; no observations -> NaN.
    """
    if not 0 <= q <= 1:
        raise MetricsError(f"quantile {q} outside 0..1")
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    index = int(np.searchsorted(cumulative, rank, side="left"))
    index = min(index, len(bounds) - 1)
    if math.isinf(bounds[index]):
        return float(bounds[index - 1]) if index > 0 else math.nan
    lower = float(bounds[index - 1]) if index > 0 else 0.0
    below = float(cumulative[index - 1]) if index > 0 else 0.0
    in_bucket = float(cumulative[index]) - below
    if in_bucket <= 0:
        return float(bounds[index])
    return lower + (float(bounds[index]) - lower) * (rank - below) / in_bucket


def _counter_delta(new: float, old: float) -> float:
    # A counter that went down was reset (engine restart): count from zero, as Prometheus does.
    return new - old if new >= old else new


def metrics_frame(
    scrapes: Sequence[MetricsScrape],
    *,
    quantiles: Sequence[float] = (0.5, 0.95),
) -> pd.DataFrame:
    """A time series: one row per scrape (time_s, zone, group) and one column per series.

    Gauges come from each scrape; ``*_per_s`` rates and ``<hist>_p<q>_s`` quantiles from the
    difference to the previous scrape of the same group (NaN on a group's first scrape, and a
    quantile is NaN when no observation fell in the interval). Failed scrapes give a row of NaN
    with the error in ``error`` and a warning.

    Raises:
        MetricsError: an expected vLLM series is missing from a scrape (named in the message).
    """
    rows: list[dict[str, Any]] = []
    previous: dict[tuple[str, str], ParsedScrape] = {}
    failed = 0
    for scrape in sorted(scrapes, key=lambda s: s.time_s):
        row: dict[str, Any] = {"time_s": scrape.time_s, "zone": scrape.zone, "group": scrape.group}
        if scrape.error:
            failed += 1
            row["error"] = scrape.error
            rows.append(row)
            continue
        parsed = parse_scrape(scrape)
        for column, family in {**GAUGES, **RATES, **HISTOGRAMS}.items():
            del column
            _require(parsed, family)
        for column, family in GAUGES.items():
            row[column] = parsed.gauges.get(family, math.nan)
        before = previous.get((scrape.zone, scrape.group))
        elapsed_s = parsed.time_s - before.time_s if before else math.nan
        for column, family in RATES.items():
            if before is None or not elapsed_s > 0:
                row[column] = math.nan
                continue
            delta = _counter_delta(
                parsed.counters.get(family, 0.0), before.counters.get(family, 0.0)
            )
            row[column] = delta / elapsed_s
        for name, family in HISTOGRAMS.items():
            bounds, cumulative = parsed.buckets.get(family, (np.zeros(0), np.zeros(0)))
            if before is not None and family in before.buckets:
                old_bounds, old_cumulative = before.buckets[family]
                if np.array_equal(bounds, old_bounds) and cumulative[-1] >= old_cumulative[-1]:
                    cumulative = cumulative - old_cumulative
            for q in quantiles:
                column = f"{name}_p{round(q * 100):d}_s"
                row[column] = (
                    histogram_quantile(q, bounds, cumulative) if before is not None else math.nan
                )
        row["error"] = ""
        rows.append(row)
        previous[(scrape.zone, scrape.group)] = parsed
    if failed:
        warnings.warn(
            f"{failed} of {len(scrapes)} scrapes failed; their rows are NaN (see 'error')",
            stacklevel=2,
        )
    frame = pd.DataFrame(rows)
    if "error" not in frame:
        frame["error"] = ""
    frame["error"] = frame["error"].fillna("")
    return frame


def load_distribution(frame: pd.DataFrame, *, by: str = "zone") -> pd.DataFrame:
    """Each zone's (or group's) share of the served load over the frame's time span.

    Returns one row per ``by`` value: mean generation tokens/s and requests/s, the share of the
    total generation tokens, mean waiting and running, and the number of groups seen.
    """
    for column in ("generation_tokens_per_s", "requests_per_s", "waiting", "running"):
        if column not in frame:
            raise MetricsError(
                f"series frame has no column {column!r}: build it with metrics_frame"
            )
    per_group = frame.groupby(["zone", "group"]).agg(
        generation_tokens_per_s=("generation_tokens_per_s", "mean"),
        requests_per_s=("requests_per_s", "mean"),
        waiting=("waiting", "mean"),
        running=("running", "mean"),
    )
    per_group = per_group.reset_index()
    if by == "group":
        table = per_group.assign(groups=1)
    elif by == "zone":
        table = per_group.groupby("zone", as_index=False).agg(
            generation_tokens_per_s=("generation_tokens_per_s", "sum"),
            requests_per_s=("requests_per_s", "sum"),
            waiting=("waiting", "sum"),
            running=("running", "sum"),
            groups=("group", "nunique"),
        )
    else:
        raise MetricsError(f"load_distribution(by={by!r}): choose 'zone' or 'group'")
    total = table["generation_tokens_per_s"].sum()
    table["share"] = table["generation_tokens_per_s"] / total if total > 0 else math.nan
    return table


def balance(shares: Sequence[float] | pd.Series) -> float:
    """Jain's fairness index of the loads: 1 = perfectly even, 1/n = all on one.

    NaN when there is no load at all.
    """
    values = np.asarray(shares, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0 or not values.sum() > 0:
        return math.nan
    return float(values.sum() ** 2 / (values.size * (values**2).sum()))


def _hpa_target(hpa: Mapping[str, Any]) -> tuple[str, MetricSpec, int, int]:
    # Read through labutils.kube.hpa (the one HPA implementation); a bare dict without
    # apiVersion/kind is taken as autoscaling/v2.
    name = (hpa.get("metadata") or {}).get("name", "HPA")
    obj = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", **hpa}
    try:
        spec = hpa_spec_from_manifest(obj, f"HPA {name}")
    except ConfigError as exc:
        raise MetricsError(str(exc)) from None
    for metric in spec.metrics:
        if metric.kind == "Pods" and metric.name in _HPA_METRICS:
            return _HPA_METRICS[metric.name], metric, spec.min_replicas, spec.max_replicas
    raise MetricsError(
        f"HPA {name}: no Pods metric the lab scrapes "
        f"(choose one of {', '.join(_HPA_METRICS)}) in spec.metrics"
    )


def recommendations(
    frame: pd.DataFrame,
    *,
    hpas: Mapping[str, Mapping[str, Any]] | None = None,
    kv_cache_high: float = 0.9,
    balance_low: float = 0.9,
) -> pd.DataFrame:
    """Advice grounded in the latest series: per zone what the HPA will do next, and why.

    Args:
        frame: from :func:`metrics_frame`.
        hpas: zone -> its HPA manifest (``autoscaling/v2``); the desired replica count is
            :func:`labutils.kube.hpa.replicas_for_metric` over the latest per-group values,
            clamped to min/max (without behavior/stabilization).
        kv_cache_high: KV-cache usage above which a group is flagged.
        balance_low: Jain index below which the zone load is called unbalanced.

    Returns:
        One row per finding: zone, kind, value, message.
    """
    findings: list[dict[str, Any]] = []
    ok = frame[frame["error"].eq("")] if "error" in frame else frame
    if ok.empty:
        raise MetricsError("no successful scrape in the series: nothing to recommend from")
    latest = ok.sort_values("time_s").groupby(["zone", "group"]).tail(1)
    for zone_key, part in latest.groupby("zone"):
        zone = str(zone_key)
        groups = len(part)
        if hpas and zone in hpas:
            column, metric, low, high = _hpa_target(hpas[zone])
            target = metric.target
            pods = [PodSample(str(g), float(v)) for g, v in zip(part["group"], part[column],
                                                                  strict=True)]  # fmt: skip
            proposal = replicas_for_metric(groups, pods, metric)
            average, ratio = proposal.usage, proposal.ratio
            desired = max(low, min(high, proposal.replicas))
            verb = (
                "keep" if desired == groups else ("scale up" if desired > groups else "scale down")
            )
            findings.append(
                {
                    "zone": zone,
                    "kind": "hpa",
                    "value": float(desired),
                    "message": (
                        f"{zone}: {column} averages {average:.1f} per group vs target {target:g} "
                        f"-> HPA will {verb} to {desired} groups (now {groups}, min {low}, "
                        f"max {high})"
                        + (
                            " — at max: add capacity or shift load"
                            if desired == high and ratio > 1
                            else ""
                        )
                    ),
                }
            )
        for _, row in part.iterrows():
            if row["kv_cache_usage"] >= kv_cache_high:
                findings.append(
                    {
                        "zone": zone,
                        "kind": "kv_cache",
                        "value": float(row["kv_cache_usage"]),
                        "message": (
                            f"{row['group']}: KV cache {row['kv_cache_usage']:.0%} full -> "
                            "preemptions ahead; lower max-num-seqs or add groups"
                        ),
                    }
                )
    if "generation_tokens_per_s" in ok and ok["zone"].nunique() > 1:
        dist = load_distribution(ok)
        index = balance(dist["generation_tokens_per_s"])
        if not math.isnan(index) and index < balance_low:
            busiest = dist.sort_values("share", ascending=False).iloc[0]
            findings.append(
                {
                    "zone": str(busiest["zone"]),
                    "kind": "balance",
                    "value": index,
                    "message": (
                        f"zone load unbalanced (Jain index {index:.2f}): {busiest['zone']} serves "
                        f"{busiest['share']:.0%} of tokens; check route weights and group counts"
                    ),
                }
            )
    return pd.DataFrame(findings, columns=["zone", "kind", "value", "message"])
