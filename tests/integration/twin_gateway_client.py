"""A bounded async client for the twin tests (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp


async def send_requests(
    url: str,
    count: int,
    concurrency: int = 8,
    max_tokens: int = 1,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Send ``count`` completions to ``url`` with ``concurrency`` workers; one dict each."""
    assert url.startswith("http://127.0.0.1:")
    results: list[dict[str, Any]] = []
    remaining = [count]

    async def worker(session: aiohttp.ClientSession) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.monotonic()
            try:
                async with session.post(
                    url + "/v1/completions",
                    json={"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": max_tokens},
                    headers=headers or {},
                ) as r:
                    await r.read()
                    results.append({"status": r.status, "zone": r.headers.get("x-lab-zone"),
                                    "group": r.headers.get("x-lab-group"), "t": start,
                                    "latency_s": time.monotonic() - start})  # fmt: skip
            except aiohttp.ClientError as exc:
                results.append({"status": -1, "zone": None, "t": start, "error": str(exc)})

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results
