"""A load test through the gateway with the target's metrics and LWS status sampled alongside.

One wall clock for the requests, the scrapes and the replica counts, so notebooks 03 and 04
can put client latency, server metrics and scaling on one time axis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from labutils._aio import run_sync
from labutils._progress import progress_bar
from labutils.errors import LoadTestError
from labutils.loadtest import LoadSummary, LoadTestResult, Schedule, summarize
from labutils.loadtest.sender import run_load_async
from labutils.metrics.series import metrics_frame
from labutils.protocol import Endpoints, MetricsScrape

__all__ = [
    "MonitoredRun",
    "run_monitored_load",
]


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
        """:func:`labutils.metrics.series.metrics_frame` of the scrapes taken during the run."""
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
    with progress_bar(total=max(settle_s, 0.0), desc="watching after the load", unit="s",
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
        backend: any :class:`~labutils.protocol.Backend` (twin or EKS).
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
