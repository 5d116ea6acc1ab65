"""Prometheus's HTTP API: PromQL queries as tidy DataFrames, on both targets.

:func:`query` (instant) and :func:`query_range` run one PromQL expression against the
Prometheus that scrapes a target's leaders (``backend.prometheus()``: the twin's local server,
or on EKS the cluster's Prometheus through the API-server service proxy) and return one row per
sample: ``time_s``, ``value`` and one column per label. A refused query or an unreachable server
raises :class:`~labutils.errors.MetricsError` naming the query and the URL; an empty result
warns and returns an empty frame, never a silent 0.

:func:`lab_queries` holds the PromQL notebook 03 shows (request rate, TTFT/ITL quantiles per
zone, queue depth, KV-cache use, ready leaders). The zone comes from the leader pod's name
(``vllm-<zone>-<g>``, docs/contracts.md) with ``label_replace``: the lab's PodMonitor carries
no zone label (prometheus-operator copies pod labels only when ``podTargetLabels`` names
them), so this works on any cluster and on the twin alike.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import pandas as pd

from labutils._aio import run_sync
from labutils.errors import MetricsError, WaitTimeout
from labutils.metrics.series import (
    GAUGES,
    HISTOGRAMS,
    RATES,
)
from labutils.protocol import PrometheusApi

__all__ = [
    "POD_ZONE_REGEX",
    "HttpPrometheus",
    "alerts",
    "api_body",
    "lab_queries",
    "prometheus_api",
    "prometheus_frame",
    "prometheus_frame_async",
    "query",
    "query_range",
    "result_frame",
    "rules",
    "rules_frame",
    "targets",
    "targets_frame",
    "wait_for_alert",
    "wait_for_no_alert",
    "wait_scraped",
    "with_zone",
]

# Leader pods are named <lws>-<group index> and the lab's LWS are vllm-<zone> (contracts).
POD_ZONE_REGEX = "vllm-(.+)-[0-9]+"


def with_zone(expr: str) -> str:
    """``expr`` with a ``zone`` label taken from its ``pod`` label (``vllm-<zone>-<g>``)."""
    return f'label_replace({expr}, "zone", "$1", "pod", "{POD_ZONE_REGEX}")'


def lab_queries(
    namespace: str = "vllm-lab", *, window: str = "1m", quantiles: Sequence[float] = (0.5, 0.99)
) -> dict[str, str]:
    """The PromQL behind notebook 03's server-side panels (and the Grafana dashboard).

    Keys: ``request_rate`` (finished requests/s per zone), ``ttft_p50``/``ttft_p99`` and
    ``itl_p50``/``itl_p99`` (seconds, ``histogram_quantile`` over the per-zone sum of bucket
    rates), ``queue_depth`` (waiting requests per zone), ``kv_cache_usage`` (fullest leader
    per zone, 0..1), ``ready_leaders`` (leaders Prometheus scrapes successfully, per zone).
    """
    sel = f'{{namespace="{namespace}"}}'
    requests = with_zone(f"rate(vllm:request_success_total{sel}[{window}])")
    out = {"request_rate": f"sum by (zone) ({requests})"}
    for name, family in (("ttft", HISTOGRAMS["ttft"]), ("itl", HISTOGRAMS["itl"])):
        for q in quantiles:
            rate = with_zone(f"rate({family}_bucket{sel}[{window}])")
            out[f"{name}_p{round(q * 100):d}"] = (
                f"histogram_quantile({q}, sum by (le, zone) ({rate}))"
            )
    out["queue_depth"] = f"sum by (zone) ({with_zone(f'vllm:num_requests_waiting{sel}')})"
    out["kv_cache_usage"] = f"max by (zone) ({with_zone(f'vllm:kv_cache_usage_perc{sel}')})"
    # job = <PodMonitor namespace>/<PodMonitor name> (prometheus-operator's default job label)
    up = f'up{{namespace="{namespace}", job="{namespace}/vllm"}}'
    out["ready_leaders"] = f"sum by (zone) ({with_zone(up)})"
    return out


# --- the HTTP API ---------------------------------------------------------------------------
class HttpPrometheus:
    """Prometheus reached directly over HTTP (the twin's server, in-cluster, a port-forward).

    Args:
        url: base URL, e.g. ``http://127.0.0.1:9090``.
        headers: sent with every request (e.g. an ``Authorization`` header).
        timeout_s: per request.
    """

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"HttpPrometheus({self.url!r})"

    async def get_async(
        self, endpoint: str, params: Mapping[str, str], session: aiohttp.ClientSession | None = None
    ) -> dict[str, Any]:
        """:meth:`get` for async callers (optionally on their own session)."""
        url = f"{self.url}/api/v1/{endpoint}"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            if session is None:
                async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as own:
                    return await _get_json(own, url, params, timeout)
            return await _get_json(session, url, params, timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = f"{type(exc).__name__} {exc}".strip()
            raise MetricsError(
                f"GET {url}: {detail}; is Prometheus running (twin: 'labctl twin status')?"
            ) from None

    def get(self, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /api/v1/<endpoint>``; the decoded JSON body (error bodies included)."""
        return run_sync(self.get_async(endpoint, params))


async def _get_json(
    session: aiohttp.ClientSession,
    url: str,
    params: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
) -> dict[str, Any]:
    async with session.get(url, params=dict(params), timeout=timeout) as resp:
        text = await resp.text()
    try:
        body = json.loads(text)
    except ValueError:
        raise MetricsError(
            f"GET {url}: HTTP {resp.status}, not Prometheus JSON: {text[:200]!r}"
        ) from None
    if not isinstance(body, dict):
        raise MetricsError(f"GET {url}: HTTP {resp.status}, unexpected JSON {text[:200]!r}")
    return body


def prometheus_api(source: Any) -> PrometheusApi:
    """The :class:`PrometheusApi` of ``source``: a backend, a ``PrometheusApi`` or a URL."""
    if isinstance(source, str):
        return HttpPrometheus(source)
    if isinstance(source, PrometheusApi):
        return source
    if callable(getattr(source, "prometheus", None)):
        api: PrometheusApi = source.prometheus()
        return api
    raise MetricsError(
        f"{source!r} is not a Prometheus: pass a backend, a PrometheusApi or a base URL"
    )


def api_body(body: Mapping[str, Any], *, query: str, url: str) -> dict[str, Any]:
    """The ``data`` of a Prometheus API answer; :class:`MetricsError` for an error answer.

    Prometheus's warnings (e.g. a range query over a missing range) are re-issued as Python
    warnings so they are seen.
    """
    for text in body.get("warnings") or []:
        warnings.warn(f"Prometheus at {url} on {query!r}: {text}", stacklevel=3)
    if body.get("status") != "success":
        kind = body.get("errorType", "error")
        raise MetricsError(
            f"Prometheus at {url} refused {query!r}: {kind}: {body.get('error', body)}"
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise MetricsError(f"Prometheus at {url} answered {query!r} without data: {body!r}")
    return data


def result_frame(data: Mapping[str, Any]) -> pd.DataFrame:
    """A query's ``data`` (vector, matrix, scalar or string) as rows of samples.

    Columns: ``time_s``, ``value`` (float; ``NaN``/``Inf`` as Prometheus writes them), then one
    column per label, sorted (``__name__`` included when the series kept its name).
    """
    kind = data.get("resultType")
    result = data.get("result")
    rows: list[dict[str, Any]] = []
    if kind in ("scalar", "string"):
        stamp, value = result  # type: ignore[misc]
        rows.append({"time_s": float(stamp), "value": _number(value)})
    else:
        for series in result or []:
            labels = dict(series.get("metric") or {})
            samples = series.get("values") or ([series["value"]] if "value" in series else [])
            for stamp, value in samples:
                rows.append({"time_s": float(stamp), "value": _number(value), **labels})
    if not rows:
        return pd.DataFrame({"time_s": pd.Series(dtype=float), "value": pd.Series(dtype=float)})
    frame = pd.DataFrame(rows)
    names = sorted(str(c) for c in frame.columns if c not in ("time_s", "value"))
    frame = frame[["time_s", "value", *names]]
    return frame.sort_values(["time_s", *names], ignore_index=True)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _empty_warning(query: str, url: str) -> None:
    warnings.warn(
        f"PromQL {query!r} at {url} returned no series (nothing scraped yet, a label that "
        "does not match, or a metric name the targets do not export)",
        stacklevel=3,
    )


def query(
    source: Any, promql: str, *, time_s: float | None = None, warn_empty: bool = True
) -> pd.DataFrame:
    """Run an instant PromQL query; one row per series (see :func:`result_frame`).

    Args:
        source: a backend (``backend.prometheus()`` is used), a :class:`PrometheusApi` or a
            Prometheus base URL.
        promql: the expression.
        time_s: evaluation time (Unix seconds); default: now, as Prometheus decides.
        warn_empty: warn when no series matched (the frame is empty then).

    Raises:
        MetricsError: unreachable Prometheus or a refused query (the message names both).
    """
    api = prometheus_api(source)
    params = {"query": promql}
    if time_s is not None:
        params["time"] = f"{time_s:.3f}"
    frame = result_frame(api_body(api.get("query", params), query=promql, url=api.url))
    if frame.empty and warn_empty:
        _empty_warning(promql, api.url)
    return frame


def query_range(
    source: Any,
    promql: str,
    *,
    start_s: float,
    end_s: float,
    step_s: float = 15.0,
    warn_empty: bool = True,
) -> pd.DataFrame:
    """Run a PromQL range query from ``start_s`` to ``end_s`` every ``step_s`` seconds.

    One row per series per step (see :func:`result_frame`); arguments and errors as
    :func:`query`.
    """
    if end_s < start_s or step_s <= 0:
        raise MetricsError(
            f"range query {promql!r}: need start_s <= end_s and step_s > 0, got "
            f"{start_s}, {end_s}, {step_s}"
        )
    api = prometheus_api(source)
    params = {
        "query": promql,
        "start": f"{start_s:.3f}",
        "end": f"{end_s:.3f}",
        "step": f"{step_s:g}",
    }
    frame = result_frame(api_body(api.get("query_range", params), query=promql, url=api.url))
    if frame.empty and warn_empty:
        _empty_warning(promql, api.url)
    return frame


def alerts(source: Any) -> pd.DataFrame:
    """The alerts Prometheus evaluates now (``pending`` or ``firing``), one row each.

    Columns: ``alertname``, ``state``, ``active_at_s`` (when the condition started),
    ``value``, ``summary``, then the alert's other labels (``namespace``, ``zone``,
    ``severity``...). Empty (no warning) when nothing is pending or firing.

    Raises:
        MetricsError: Prometheus is unreachable or refused the request.
    """
    api = prometheus_api(source)
    data = api_body(api.get("alerts", {}), query="/api/v1/alerts", url=api.url)
    rows = []
    for alert in data.get("alerts") or []:
        labels = dict(alert.get("labels") or {})
        active = alert.get("activeAt")
        rows.append({
            "alertname": labels.pop("alertname", ""),
            "state": alert.get("state", ""),
            "active_at_s": pd.Timestamp(active).timestamp() if active else math.nan,
            "value": _number(alert.get("value")),
            "summary": (alert.get("annotations") or {}).get("summary", ""),
            **labels,
        })  # fmt: skip
    columns = ["alertname", "state", "active_at_s", "value", "summary"]
    frame = pd.DataFrame(rows, columns=None if rows else columns)
    return frame.sort_values(["alertname", "active_at_s"], ignore_index=True) if rows else frame


def rules_frame(data: Mapping[str, Any]) -> pd.DataFrame:
    """``/api/v1/rules`` data as one row per rule.

    Columns: ``group``, ``interval_s`` (the group's evaluation interval), ``name``, ``type``
    (``alerting``/``recording``), ``for_s`` (an alert's ``for:``, as loaded: the twin scales
    it), ``state`` (an alert's ``inactive``/``pending``/``firing``), ``health``,
    ``last_error``, ``query``.
    """
    rows = []
    for group in data.get("groups") or []:
        for rule in group.get("rules") or []:
            rows.append({
                "group": group.get("name", ""),
                "interval_s": _number(group.get("interval")),
                "name": rule.get("name", ""),
                "type": rule.get("type", ""),
                "for_s": _number(rule.get("duration", 0)),
                "state": rule.get("state", ""),
                "health": rule.get("health", ""),
                "last_error": rule.get("lastError", ""),
                "query": rule.get("query", ""),
            })  # fmt: skip
    columns = ["group", "interval_s", "name", "type", "for_s", "state", "health", "last_error",
               "query"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def rules(source: Any) -> pd.DataFrame:
    """The recording and alerting rules Prometheus evaluates (see :func:`rules_frame`).

    Raises:
        MetricsError: Prometheus is unreachable or refused the request.
    """
    api = prometheus_api(source)
    return rules_frame(api_body(api.get("rules", {}), query="/api/v1/rules", url=api.url))


def targets_frame(data: Mapping[str, Any]) -> pd.DataFrame:
    """``/api/v1/targets`` data (active targets) as one row per target.

    Columns: ``job``, ``namespace``, ``pod``, ``health`` (``up``/``down``/``unknown``),
    ``scrape_interval_s``, ``last_scrape_s`` (Unix seconds), ``last_error``, ``scrape_url``.
    """
    rows = []
    for target in data.get("activeTargets") or []:
        labels = target.get("labels") or {}
        last = target.get("lastScrape")
        try:
            last_s = pd.Timestamp(last).timestamp() if last else math.nan
        except ValueError:
            last_s = math.nan
        interval = target.get("scrapeInterval")
        rows.append({
            "job": labels.get("job", ""),
            "namespace": labels.get("namespace", ""),
            "pod": labels.get("pod", ""),
            "health": target.get("health", ""),
            "scrape_interval_s": _duration_s(interval) if interval else math.nan,
            "last_scrape_s": last_s,
            "last_error": target.get("lastError", ""),
            "scrape_url": target.get("scrapeUrl", ""),
        })  # fmt: skip
    columns = ["job", "namespace", "pod", "health", "scrape_interval_s", "last_scrape_s",
               "last_error", "scrape_url"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["job", "pod"], ignore_index=True) if rows else frame


def targets(source: Any) -> pd.DataFrame:
    """The targets Prometheus scrapes now, with their interval and health (:func:`targets_frame`).

    Raises:
        MetricsError: Prometheus is unreachable or refused the request.
    """
    api = prometheus_api(source)
    body = api.get("targets", {"state": "active"})
    return targets_frame(api_body(body, query="/api/v1/targets", url=api.url))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                    "y": 31536000}  # fmt: skip


def _duration_s(text: str) -> float:
    """A Prometheus duration (``15s``, ``1m30s``, ``500ms``) in seconds; NaN if unreadable."""
    parts = _DURATION_PART.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return math.nan
    return float(sum(float(n) * _DURATION_UNIT_S[u] for n, u in parts))


def wait_for_alert(
    source: Any,
    alertname: str,
    *,
    state: str = "firing",
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    **labels: str,
) -> pd.DataFrame:
    """Poll :func:`alerts` until ``alertname`` with ``labels`` is in ``state``; its rows.

    E.g. ``wait_for_alert(backend, "VllmZoneNoReadyLeader", zone="us-west-2a")`` after a zone
    kill: the rows carry ``active_at_s`` (when the condition began) and the alert's labels.

    Raises:
        WaitTimeout: not in ``state`` within ``timeout_s`` (the last state seen is named).
    """
    deadline = time.monotonic() + timeout_s
    seen = "not pending or firing"
    while True:
        frame = alerts(source)
        if not frame.empty:
            mine = frame[frame["alertname"] == alertname]
            for key, value in labels.items():
                mine = mine[mine[key] == value] if key in mine else mine.iloc[0:0]
            if not mine.empty:
                seen = ", ".join(sorted(set(mine["state"])))
                hit = mine[mine["state"] == state]
                if not hit.empty:
                    return hit.reset_index(drop=True)
        if time.monotonic() > deadline:
            where = ", ".join(f"{k}={v}" for k, v in labels.items())
            raise WaitTimeout(
                f"alert {alertname}{{{where}}} not {state} after {timeout_s:.0f} s ({seen}); "
                "see the rule's expr and for: window at /api/v1/rules"
            )
        time.sleep(poll_s)


def wait_for_no_alert(
    source: Any, alertname: str, *, timeout_s: float = 300.0, poll_s: float = 1.0, **labels: str
) -> float:
    """Poll :func:`alerts` until ``alertname`` with ``labels`` is neither pending nor firing.

    E.g. before a drill, so that an alert left by an earlier fault is not taken for the new
    one's. Returns the seconds waited.

    Raises:
        WaitTimeout: still pending or firing after ``timeout_s`` (its state is named).
    """
    start = time.monotonic()
    while True:
        frame = alerts(source)
        mine = frame[frame["alertname"] == alertname] if not frame.empty else frame
        for key, value in labels.items():
            mine = mine[mine[key] == value] if key in mine else mine.iloc[0:0]
        if mine.empty:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            where = ", ".join(f"{k}={v}" for k, v in labels.items())
            state = ", ".join(sorted(set(mine["state"])))
            raise WaitTimeout(
                f"alert {alertname}{{{where}}} still {state} after {timeout_s:.0f} s; is the "
                "condition still true (see /api/v1/rules)?"
            )
        time.sleep(poll_s)


def wait_scraped(backend: Any, *, timeout_s: float = 60.0, poll_s: float = 0.25) -> pd.DataFrame:
    """Wait until the target's Prometheus scraped every ready group leader successfully.

    A new leader is first scraped after Prometheus's service discovery passes it on (at most
    every 5 s) plus up to one scrape interval; a query before that misses the leader. Works on
    both targets (``backend.endpoints()`` names the ready leaders, ``/api/v1/targets`` says
    which are ``up``).

    Returns:
        :func:`targets` of the moment every ready leader was ``up``.

    Raises:
        WaitTimeout: a ready leader is still not scraped (named, with its last error).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        ready = {g.group for g in backend.endpoints().groups if g.ready}
        frame = targets(backend)
        up = set(frame.loc[frame["health"].eq("up"), "pod"])
        if ready and ready <= up:
            return frame
        if time.monotonic() > deadline:
            errors = dict(zip(frame["pod"], frame["last_error"], strict=True))
            detail = "; ".join(
                f"{pod}: {errors.get(pod) or 'not discovered'}" for pod in sorted(ready - up)
            )
            raise WaitTimeout(
                f"Prometheus {prometheus_api(backend).url} has not scraped every ready leader "
                f"after {timeout_s:.0f} s: {detail or 'no ready group'}; see its targets page"
            )
        time.sleep(poll_s)


# --- one frame of the lab's server-side series (used by `labctl loadtest --prometheus`) ------
def _zone_of_pod(pod: str) -> str:
    """Zone from a leader pod name ``vllm-<zone>-<g>`` (contracts: LWS ``vllm-<zone>``)."""
    stem = pod.removeprefix("vllm-")
    head, _, tail = stem.rpartition("-")
    return head if tail.isdigit() and head else stem


async def prometheus_frame_async(
    prometheus_url: str,
    *,
    start_s: float,
    end_s: float,
    step_s: float = 15.0,
    namespace: str = "vllm-lab",
    quantiles: Sequence[float] = (0.5, 0.95),
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> pd.DataFrame:
    """The same series as :func:`metrics_frame`, from a Prometheus HTTP API (``query_range``).

    On EKS, Prometheus (scraping the leaders through the lab's PodMonitor) keeps history that
    direct scrapes lack. Series are per leader pod (= group); the zone comes from the pod name
    (``vllm-<zone>-<g>``). Rates and quantiles use a window of ``max(60 s, 4 x step)``.

    Raises:
        MetricsError: Prometheus is unreachable or refuses a query, or a metric has no series
            (named in the message).
    """
    window = f"{int(max(60.0, 4 * step_s))}s"
    sel = f'{{namespace="{namespace}"}}'
    queries: dict[str, tuple[str, str]] = {
        column: (family, f"sum by (pod) ({family}{sel})") for column, family in GAUGES.items()
    }
    for column, family in RATES.items():
        queries[column] = (family, f"sum by (pod) (rate({family}_total{sel}[{window}]))")
    for name, family in HISTOGRAMS.items():
        for q in quantiles:
            queries[f"{name}_p{round(q * 100):d}_s"] = (
                family,
                f"histogram_quantile({q}, sum by (pod, le) (rate({family}_bucket{sel}[{window}])))",
            )
    base = prometheus_url.rstrip("/") + "/api/v1/query_range"
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def one(session: aiohttp.ClientSession, query: str) -> list[dict[str, Any]]:
        params = {"query": query, "start": str(start_s), "end": str(end_s), "step": str(step_s)}
        try:
            async with session.get(base, params=params) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise MetricsError(f"GET {base}: {type(exc).__name__} {exc}".strip()) from None
        if body.get("status") != "success":
            raise MetricsError(f"{base} refused {query!r}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async with aiohttp.ClientSession(timeout=timeout, headers=dict(headers or {})) as session:
        results = await asyncio.gather(*(one(session, q) for _, q in queries.values()))
    cells: dict[tuple[float, str], dict[str, Any]] = {}
    for (column, (family, _query)), result in zip(queries.items(), results, strict=True):
        if not result and column in {**GAUGES, **RATES}:
            raise MetricsError(
                f"metric {family} has no series in Prometheus at {prometheus_url} "
                f"(namespace {namespace}); is the PodMonitor scraping the leaders?"
            )
        for series in result:
            pod = str(series["metric"].get("pod", ""))
            for stamp, value in series["values"]:
                cell = cells.setdefault(
                    (float(stamp), pod),
                    {"time_s": float(stamp), "zone": _zone_of_pod(pod), "group": pod},
                )
                cell[column] = float(value)  # Prometheus writes "NaN" where it has no value
    frame = pd.DataFrame(list(cells.values()))
    for column in queries:
        if column not in frame:
            frame[column] = math.nan
    frame["error"] = ""
    return frame.sort_values(["time_s", "zone", "group"], ignore_index=True)


def prometheus_frame(prometheus_url: str, **options: Any) -> pd.DataFrame:
    """Synchronous :func:`prometheus_frame_async`."""
    return run_sync(prometheus_frame_async(prometheus_url, **options))
