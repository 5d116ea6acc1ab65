"""One bounded scrape loop over /metrics URLs or a backend's group leaders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import pandas as pd

from labutils._aio import run_sync
from labutils._progress import progress_bar
from labutils.errors import LoadTestError
from labutils.metrics.parse import _Scrapes
from labutils.metrics.series import (
    metrics_frame,
)
from labutils.protocol import MetricsScrape

__all__ = [
    "monitor",
    "monitor_async",
    "monitor_backend",
    "scrape_urls",
    "scrape_urls_async",
]


async def scrape_urls_async(
    urls: Mapping[tuple[str, str], str], *, timeout_s: float = 5.0
) -> list[MetricsScrape]:
    """Scrape every ``(zone, group) -> metrics URL`` once, concurrently.

    A failed scrape comes back with ``error`` set (and empty text), never as made-up values.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def one(session: aiohttp.ClientSession, zone: str, group: str, url: str) -> MetricsScrape:
        try:
            async with session.get(url) as resp:
                text = await resp.text()
                if resp.status != 200:
                    return MetricsScrape(zone, group, time.time(), "", f"GET {url}: {resp.status}")
                return MetricsScrape(zone, group, time.time(), text)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return MetricsScrape(
                zone, group, time.time(), "", f"GET {url}: {type(exc).__name__} {exc}".strip()
            )

    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(one(session, z, g, u) for (z, g), u in urls.items())))


def scrape_urls(
    urls: Mapping[tuple[str, str], str], *, timeout_s: float = 5.0
) -> list[MetricsScrape]:
    """Synchronous :func:`scrape_urls_async`."""
    return run_sync(scrape_urls_async(urls, timeout_s=timeout_s))


async def _monitor_loop(
    scrape: Callable[[], Awaitable[list[MetricsScrape]]],
    *,
    interval_s: float,
    duration_s: float,
    progress: bool,
) -> list[MetricsScrape]:
    # One bounded loop for both sources: rounds start on a fixed grid, so a slow scrape delays
    # only itself, not the following rounds.
    if not interval_s > 0 or not duration_s > 0:
        raise LoadTestError(f"interval_s={interval_s}, duration_s={duration_s}: both must be > 0")
    rounds = max(1, int(duration_s / interval_s) + 1)
    scrapes: list[MetricsScrape] = []
    start = time.perf_counter()
    with progress_bar(
        total=rounds, desc="monitor", unit="scrape", disable=not progress, leave=False
    ) as bar:
        for n in range(rounds):
            delay = start + n * interval_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            scrapes += await scrape()
            bar.update(1)
    return scrapes


async def monitor_async(
    urls: Mapping[tuple[str, str], str],
    *,
    interval_s: float = 1.0,
    duration_s: float = 60.0,
    progress: bool = True,
) -> list[MetricsScrape]:
    """Scrape ``urls`` every ``interval_s`` for ``duration_s`` (bounded), with a progress bar."""
    timeout_s = min(interval_s * 5, 10.0)
    return await _monitor_loop(
        lambda: scrape_urls_async(urls, timeout_s=timeout_s),
        interval_s=interval_s,
        duration_s=duration_s,
        progress=progress,
    )


def monitor(
    urls: Mapping[tuple[str, str], str],
    *,
    interval_s: float = 1.0,
    duration_s: float = 60.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Scrape periodically and return :func:`metrics_frame` of the scrapes."""
    scrapes = run_sync(
        monitor_async(urls, interval_s=interval_s, duration_s=duration_s, progress=progress)
    )
    return metrics_frame(scrapes)


def monitor_backend(
    backend: _Scrapes,
    *,
    interval_s: float = 2.0,
    duration_s: float = 60.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Call ``backend.scrape_metrics()`` every ``interval_s`` for ``duration_s``; return series.

    Works with either target (the twin scrapes leaders directly, EKS through the API server's
    pod proxy), since both implement :class:`labutils.protocol.Backend`.
    """
    scrapes = run_sync(
        _monitor_loop(
            lambda: asyncio.to_thread(backend.scrape_metrics),
            interval_s=interval_s,
            duration_s=duration_s,
            progress=progress,
        )
    )
    return metrics_frame(scrapes)
