"""Prometheus's HTTP API: PromQL queries as tidy DataFrames."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import pandas as pd

from labutils._aio import run_sync
from labutils.errors import MetricsError
from labutils.metrics.series import (
    GAUGES,
    HISTOGRAMS,
    RATES,
)

__all__ = [
    "prometheus_frame",
    "prometheus_frame_async",
]


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
