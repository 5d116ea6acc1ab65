"""Streaming load against in-process simulated servers on 127.0.0.1 (several in one loop)."""

from __future__ import annotations

import asyncio
import gc
import json
import time

import aiohttp

from labutils.sim.server import ServeOptions, build_engine, start_servers


async def _stream_ttft_s(session: aiohttp.ClientSession, url: str, max_tokens: int) -> float:
    body = {"model": "m", "prompt": "load test", "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True}  # fmt: skip
    start = time.monotonic()
    ttft = None
    tokens = 0
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if json.loads(line[6:])["choices"][0]["text"]:
                tokens += 1
                ttft = ttft if ttft is not None else time.monotonic() - start
    assert tokens == max_tokens
    assert ttft is not None
    return ttft


async def _queueing_run() -> tuple[list[float], int, list[dict[str, object]]]:
    engines = [
        build_engine("llama-3.1-8b", "h100", max_model_len=2048, max_num_seqs=2,
                     served_model_name="m")
        for _ in range(2)
    ]  # fmt: skip
    servers = await start_servers(engines, [ServeOptions("m", zone=f"z{i}") for i in range(2)])
    # A full garbage collection of the whole suite's heap takes 0.15-0.4 s on a 2-core machine;
    # run it now rather than inside the TTFTs this test compares.
    gc.collect()
    try:
        urls = [f"http://127.0.0.1:{s.port}" for s in servers]
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(_stream_ttft_s(session, urls[0], 8)) for _ in range(10)]
            await asyncio.sleep(0.02)
            async with session.get(f"{urls[0]}/lab/state") as resp:
                waiting = int((await resp.json())["num_requests_waiting"])
            ttfts = list(await asyncio.gather(*tasks))
            states = []
            for url in urls:
                async with session.get(f"{url}/lab/state") as resp:
                    states.append(await resp.json())
        return ttfts, waiting, states
    finally:
        await asyncio.gather(*(s.stop() for s in servers))


def test_client_ttft_rises_with_queueing_and_engines_are_independent() -> None:
    ttfts, waiting, states = asyncio.run(_queueing_run())
    ttfts.sort()
    assert waiting >= 4  # 10 offered, 2 running
    assert ttfts[-1] > 3 * ttfts[0]
    assert states[0]["steps"] > 0 and states[1]["steps"] == 0
    assert states[0]["zone"] == "z0" and states[1]["zone"] == "z1"


async def _disconnect_run() -> dict[str, object]:
    engine = build_engine("llama-3.1-8b", "h100", max_model_len=2048, served_model_name="m")
    (server,) = await start_servers([engine], [ServeOptions("m")])
    url = f"http://127.0.0.1:{server.port}"
    try:
        body = {"model": "m", "prompt": "go", "max_tokens": 1000, "stream": True,
                "ignore_eos": True}  # fmt: skip
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/completions", json=body) as resp:
                await resp.content.readline()  # first event, then hang up mid-stream
            deadline = time.monotonic() + 5
            while True:
                async with session.get(f"{url}/lab/state") as resp:
                    state = await resp.json()
                if state["num_requests_running"] == 0 or time.monotonic() > deadline:
                    return dict(state)
                await asyncio.sleep(0.05)
    finally:
        await server.stop()


def test_client_disconnect_aborts_the_request_and_frees_the_kv_cache() -> None:
    state = asyncio.run(_disconnect_run())
    assert state["num_requests_running"] == 0
    assert state["kv_cache_usage_perc"] == 0.0
