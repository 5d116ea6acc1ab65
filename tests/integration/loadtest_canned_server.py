"""A small, honest OpenAI-compatible streaming server for the load-test tests.

It streams ``max_tokens`` completion chunks (compact JSON, like vLLM) with a fixed prefill
delay and per-token delay, ends with a ``usage`` chunk and ``data: [DONE]``, names itself in
``x-lab-zone`` / ``x-lab-group`` headers and exports vLLM-named Prometheus metrics measured on
the server side (TTFT from request arrival, E2E). The model name picks a behaviour:

- ``ok``: normal answer; ``500`` / ``429``: that HTTP error with a vLLM-style JSON body;
- ``reset``: the connection is reset (RST) before any response; ``reset_mid``: after 2 chunks;
- ``stall``: never answers (until the client gives up); ``mixed``: cycles through
  ``ok, 500, 429, reset, stall, reset_mid`` in arrival order.

Run: ``python loadtest_canned_server.py --zone z --group g [--ttft-ms 30 --itl-ms 5]``; it
prints ``PORT <n>`` once listening on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import struct
import sys
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_CYCLE = ("ok", "500", "429", "reset", "stall", "reset_mid")
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _Canned:
    def __init__(self, zone: str, group: str, ttft_s: float, itl_s: float) -> None:
        self.zone, self.group = zone, group
        self.ttft_s, self.itl_s = ttft_s, itl_s
        self.cycle = itertools.cycle(_CYCLE)
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        r = self.registry
        self.running = Gauge("vllm:num_requests_running", "running", labels, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", labels, registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "kv", labels, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "prompt", labels, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "gen", labels, registry=r)
        self.success = Counter(
            "vllm:request_success", "ok", [*labels, "finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "ttft", labels, buckets=_TTFT_BUCKETS, registry=r
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds", "itl", labels, buckets=_ITL_BUCKETS, registry=r
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "e2e", labels, buckets=_E2E_BUCKETS, registry=r
        )

    def _headers(self) -> dict[str, str]:
        return {"x-lab-zone": self.zone, "x-lab-group": self.group}

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        body = await request.json()
        model = str(body.get("model", "ok"))
        behaviour = next(self.cycle) if model == "mixed" else model
        if behaviour in ("500", "429"):
            message = "rate limited" if behaviour == "429" else "engine failed"
            err = {"error": {"message": message, "type": "Error", "code": int(behaviour)}}
            return web.Response(
                status=int(behaviour),
                body=_dumps(err),
                headers=self._headers(),
                content_type="application/json",
            )
        if behaviour == "reset":
            _reset(request)
            raise asyncio.CancelledError
        if behaviour == "stall":
            await asyncio.sleep(3600)
        labels = {"model_name": model, "engine": "0"}
        max_tokens = int(body.get("max_tokens", 16))
        prompt_tokens = len(str(body.get("prompt", "")).split())
        self.running.labels(**labels).inc()
        try:
            await asyncio.sleep(self.ttft_s)
            if not body.get("stream"):
                await asyncio.sleep(self.itl_s * (max_tokens - 1))
                answer = {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "model": model,
                    "choices": [
                        {"index": 0, "text": " tok" * max_tokens, "finish_reason": "length"}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": max_tokens,
                        "total_tokens": prompt_tokens + max_tokens,
                    },
                }
                self._observe(labels, arrived, arrived + self.ttft_s, prompt_tokens, max_tokens)
                return web.Response(
                    body=_dumps(answer), headers=self._headers(), content_type="application/json"
                )
            resp = web.StreamResponse(
                headers={**self._headers(), "Content-Type": "text/event-stream"}
            )
            await resp.prepare(request)
            first = 0.0
            last = 0.0
            for i in range(max_tokens):
                if i:
                    await asyncio.sleep(self.itl_s)
                chunk = {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "text": " tok",
                            "finish_reason": "length" if i == max_tokens - 1 else None,
                        }
                    ],
                }
                await resp.write(b"data: " + _dumps(chunk) + b"\n\n")
                now = time.perf_counter()
                if i == 0:
                    first = now
                else:
                    self.itl.labels(**labels).observe(now - last)
                last = now
                if behaviour == "reset_mid" and i == 1:
                    _reset(request)
                    raise asyncio.CancelledError
            usage = {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": max_tokens,
                    "total_tokens": prompt_tokens + max_tokens,
                },
            }
            await resp.write(b"data: " + _dumps(usage) + b"\n\ndata: [DONE]\n\n")
            self._observe(labels, arrived, first, prompt_tokens, max_tokens)
            await resp.write_eof()
            return resp
        finally:
            self.running.labels(**labels).dec()

    def _observe(
        self, labels: dict[str, str], arrived: float, first: float, prompt: int, output: int
    ) -> None:
        self.ttft.labels(**labels).observe(first - arrived)
        self.e2e.labels(**labels).observe(time.perf_counter() - arrived)
        self.prompt_tokens.labels(**labels).inc(prompt)
        self.generation_tokens.labels(**labels).inc(output)
        self.success.labels(**labels, finished_reason="length").inc()


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST (SO_LINGER 0), as a crashing proxy or pod would."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zone", default="zone-a")
    parser.add_argument("--group", default="vllm-zone-a-0")
    parser.add_argument("--ttft-ms", type=float, default=30.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    args = parser.parse_args()
    canned = _Canned(args.zone, args.group, args.ttft_ms / 1000, args.itl_ms / 1000)
    app = web.Application()
    app.router.add_post("/v1/completions", canned.completions)
    app.router.add_get("/metrics", canned.metrics)
    app.router.add_get("/health", canned.health)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
