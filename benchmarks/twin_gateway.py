"""Gateway measurements on the twin, side by side in one run (127.0.0.1 only, bounded).

1. overhead: the same small requests direct to a group leader and through HAProxy,
   interleaved; p50/p99 added latency.
2. failover detection: kill a zone; time until HAProxy has marked all its servers DOWN,
   compared with interval x unhealthy-threshold (+ one interval).
3. routing strategies: 2 zones x 2 groups, one group slowed 4x, the same open-loop streaming
   load (Poisson arrivals) per strategy; TTFT p50/p99 and errors, ratio to ``weighted``.

Usage: python benchmarks/twin_gateway.py [--engine stub|sim|"CMD"] [--rate 20] [--duration-s 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from twin_fixtures import STUB_ENGINE, write_rendered  # noqa: E402

from labutils.targets.twin import STRATEGIES, TwinBackend  # noqa: E402
from labutils.targets.twin.haproxy import runtime_command  # noqa: E402

ZONES = {"us-west-2a": 1, "us-west-2b": 1}
BODY = {"model": "llama-3.1-8b", "prompt": "hello", "max_tokens": 1}  # twin_fixtures model


def _engine(name: str) -> str | list[str]:
    if name == "stub":
        return STUB_ENGINE
    return "sim" if name == "sim" else shlex.split(name)


async def _timed_post(session: aiohttp.ClientSession, url: str) -> float:
    start = time.perf_counter()
    async with session.post(url + "/v1/completions", json=BODY) as r:
        await r.read()
        r.raise_for_status()
    return time.perf_counter() - start


async def overhead(twin: TwinBackend, count: int) -> None:
    ends = twin.endpoints()
    direct_url = ends.groups[0].url
    # the gateway picks among all groups; pin to the same engine through its zone frontend
    zone_url = ends.zone_urls[ends.groups[0].zone]
    direct, gateway = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm-up
            await _timed_post(session, direct_url)
            await _timed_post(session, zone_url)
        for _ in range(count):
            direct.append(await _timed_post(session, direct_url))
            gateway.append(await _timed_post(session, zone_url))
    d50, d99 = np.percentile(direct, [50, 99]) * 1000
    g50, g99 = np.percentile(gateway, [50, 99]) * 1000
    print(f"overhead ({count} interleaved requests, zone frontend vs direct to the same engine):")
    print(f"  direct p50 {d50:.2f} ms p99 {d99:.2f} ms; via HAProxy p50 {g50:.2f} ms p99 "
          f"{g99:.2f} ms; added p50 {g50 - d50:+.2f} ms p99 {g99 - d99:+.2f} ms")  # fmt: skip


async def _zone_servers_down(twin: TwinBackend, zone: str) -> bool:
    text = await runtime_command(twin.state_dir / "haproxy.sock", "show stat")
    rows = [line.split(",") for line in text.splitlines() if line.startswith(f"zone_{zone},")]
    servers = [r for r in rows if r[1] not in ("FRONTEND", "BACKEND") and r[17] != "MAINT"]
    return bool(servers) and all(r[17].startswith("DOWN") for r in servers)


async def failover(twin: TwinBackend, interval_s: float, fall: int) -> None:
    zone = "us-west-2a"
    start = time.monotonic()
    await asyncio.to_thread(twin.fail, zone=zone, mode="kill")
    killed = time.monotonic()
    while not await _zone_servers_down(twin, zone):
        if time.monotonic() - killed > 60:
            print("failover: zone never marked down within 60 s")
            return
        await asyncio.sleep(0.02)
    detect_s = time.monotonic() - killed
    bound = interval_s * fall + interval_s
    print(f"failover: zone {zone} killed (call took {killed - start:.2f} s); all servers DOWN "
          f"after {detect_s:.2f} s; bound interval x threshold + interval = {bound:.2f} s "
          f"(ratio {detect_s / bound:.2f})")  # fmt: skip
    await asyncio.to_thread(twin.restore, zone=zone)


async def _stream_ttft(session: aiohttp.ClientSession, url: str) -> float | None:
    start = time.perf_counter()
    body = {**BODY, "max_tokens": 32, "stream": True}
    try:
        async with session.post(url + "/v1/completions", json=body) as r:
            if r.status != 200:
                return None
            ttft = None
            async for line in r.content:
                if ttft is None and line.startswith(b"data: {"):
                    ttft = time.perf_counter() - start
            return ttft
    except aiohttp.ClientError:
        return None


async def open_loop(url: str, rate: float, duration_s: float, seed: int) -> list[float | None]:
    rng = random.Random(seed)
    tasks = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        t = 0.0
        start = time.monotonic()
        while t < duration_s:
            delay = start + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_stream_ttft(session, url)))
            t += rng.expovariate(rate)
        return list(await asyncio.gather(*tasks))


def strategies(root: Path, engine: str | list[str], rate: float, duration_s: float) -> None:
    rendered = write_rendered(root / "rendered-s", ZONES, replicas=2)
    base_p99 = None
    print(f"strategies: 2 zones x 2 groups, vllm-us-west-2a-0 slowed 4x, Poisson {rate}/s for "
          f"{duration_s} s, 32-token streams; TTFT:")  # fmt: skip
    for strategy in STRATEGIES:
        twin = TwinBackend(root / f"state-{strategy}", engine=engine, strategy=strategy,
                           model_load_s=0.5, time_scale=0.2)  # fmt: skip
        try:
            twin.up(rendered, timeout_s=120)
            twin.fail(group="vllm-us-west-2a-0", mode="slow")
            ttfts = asyncio.run(open_loop(twin.endpoints().gateway_url, rate, duration_s, 7))
        finally:
            twin.down()
        ok = [t for t in ttfts if t is not None]
        p50, p99 = np.percentile(ok, [50, 99]) * 1000 if ok else (float("nan"),) * 2
        base_p99 = base_p99 or p99
        print(
            f"  {strategy:16s} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  errors "
            f"{len(ttfts) - len(ok)}/{len(ttfts)}  p99 ratio to weighted {p99 / base_p99:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="sim")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    engine = _engine(args.engine)
    print(f"engine: {args.engine}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rendered = write_rendered(root / "rendered", ZONES, replicas=1)
        twin = TwinBackend(root / "state", engine=engine, model_load_s=0.5, time_scale=0.2)
        try:
            twin.up(rendered, timeout_s=120)
            asyncio.run(overhead(twin, args.requests))
            asyncio.run(failover(twin, interval_s=1.0, fall=2))
        finally:
            twin.down()
        strategies(root, engine, args.rate, args.duration_s)


if __name__ == "__main__":
    main()
