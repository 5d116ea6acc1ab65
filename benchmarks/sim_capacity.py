"""How many simulated engines one process sustains on this machine with step timing on model.

For each engine count N, starts ``python -m labutils.sim serve ... --replicas N`` (one process),
drives every engine with C closed-loop streaming clients from this process for a bounded time,
and reports streamed tokens/s (client side), the server's step lag (how late steps end past
the model's deadline, mean / max, relative to the mean model step) and the server's RSS.
"Sustained" = the wall time of the steps within 10 % of the model's (timing err); the lag columns
show per-step jitter (asyncio timers are ~1 ms coarse). 127.0.0.1 only; every run is bounded.

    python benchmarks/sim_capacity.py [--model M] [--gpu h100] [--tp N] [--pp N]
        [--engines 1,4,8,12,16] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

_REPO = Path(__file__).resolve().parents[1]
_MAX_REQUESTS_PER_CLIENT = 200


async def _client(
    session: aiohttp.ClientSession, url: str, stop_at: float, counts: list[int]
) -> None:
    body = {"model": "sim", "prompt": "capacity check", "max_tokens": 64, "stream": True,
            "ignore_eos": True}  # fmt: skip
    for _ in range(_MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() >= stop_at:
            return
        async with session.post(f"{url}/v1/completions", json=body) as resp:
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    counts[0] += 1
                if time.monotonic() >= stop_at:
                    return


async def _drive(ports: list[int], clients: int, seconds: float) -> tuple[float, list[dict]]:
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    counts = [0]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        start = time.monotonic()
        stop_at = start + seconds
        await asyncio.gather(
            *(_client(session, u, stop_at, counts) for u in urls for _ in range(clients))
        )
        elapsed = time.monotonic() - start
        states = []
        for u in urls:
            async with session.get(f"{u}/lab/state") as resp:
                states.append(await resp.json())
    return counts[0] / elapsed, states


def _run(args: argparse.Namespace, engines: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "labutils.sim", "serve", args.model, "--gpu", args.gpu,
           "-tp", str(args.tp), "-pp", str(args.pp),
           "--max-model-len", "4096", "--port", "0", "--replicas", str(engines),
           "--served-model-name", "sim"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=_REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ports = [json.loads(proc.stdout.readline())["port"] for _ in range(engines)]
        tok_s, states = asyncio.run(_drive(ports, args.clients, args.seconds))
        rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(10)
    steps = sum(s["steps"] for s in states)
    model_step_s = sum(s["model_busy_s"] for s in states) / steps
    lag_mean_s = sum(s["step_lag_s_mean"] * s["steps"] for s in states) / steps
    lag_max_s = max(s["step_lag_s_max"] for s in states)
    timing_error = (
        sum(s["step_wall_s"] for s in states) / sum(s["model_busy_s"] for s in states) - 1
    )
    return {"engines": engines, "tok_s": tok_s, "model_step_ms": model_step_s * 1e3,
            "lag_mean_ms": lag_mean_s * 1e3, "lag_ratio": lag_mean_s / model_step_s,
            "lag_max_ms": lag_max_s * 1e3, "rss_mb": rss_mb,
            "timing_error": timing_error}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--gpu", default="h100")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--engines", default="1,4,8,12,16")
    parser.add_argument("--clients", type=int, default=8, help="streaming clients per engine")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"cpus={psutil.cpu_count()} gpu={args.gpu} model={args.model} tp={args.tp} pp={args.pp} "
          f"clients/engine={args.clients} seconds={args.seconds}")  # fmt: skip
    print(f"{'engines':>7} {'stream tok/s':>12} {'model step':>10} {'timing err':>10} "
          f"{'lag mean':>9} {'lag/step':>8} {'lag max':>8} {'RSS MB':>7}  sustained")  # fmt: skip
    best = 0
    for n in (int(x) for x in args.engines.split(",")):
        r = _run(args, n)
        ok = abs(r["timing_error"]) <= 0.10
        best = n if ok else best
        print(f"{n:>7} {r['tok_s']:>12.0f} {r['model_step_ms']:>8.2f}ms "
              f"{r['timing_error'] * 100:>+9.1f}% {r['lag_mean_ms']:>7.2f}ms "
              f"{r['lag_ratio'] * 100:>7.1f}% {r['lag_max_ms']:>6.1f}ms {r['rss_mb']:>7.0f}  "
              f"{'yes' if ok else 'no'}")  # fmt: skip
    print(f"largest engine count with step timing within 10 % of the model: {best}")


if __name__ == "__main__":
    main()
