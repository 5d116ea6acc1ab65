"""A minimal stand-in for the simulated engine, for the twin's tests (same CLI and endpoints).

Run as ``python twin_stub_engine.py serve MODEL --host 127.0.0.1 --port 0 ... --lab-group G``.
It prints the ``listening`` JSON line, answers ``/health`` 503 until the model-load time has
passed, ``/metrics`` with vLLM gauge names, ``/v1/completions`` (plain and SSE, one event per
token every ``--token-s``), ``/lab/fault`` and ``/lab/state``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from aiohttp import web


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--served-model-name")
    parser.add_argument("--model-load-s", type=float, default=0.5)
    parser.add_argument("--lab-zone", default="")
    parser.add_argument("--lab-group", default="")
    parser.add_argument("--gpu", default="a10g")
    parser.add_argument("--token-s", type=float, default=0.005)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: list[str]) -> None:
    args = _parse(argv)
    started = time.monotonic()
    state = {"mode": "ok", "slow_factor": 4.0, "running": 0, "waiting": 0, "served": 0}
    headers = {
        "x-lab-simulated": "true",
        "x-lab-simulated-gpu": args.gpu,
        "x-lab-engine-group": args.lab_group,
    }

    def loaded() -> bool:
        return time.monotonic() - started >= args.model_load_s

    async def health(_: web.Request) -> web.Response:
        ok = loaded() and state["mode"] != "unhealthy"
        return web.Response(status=200 if ok else 503, headers=headers)

    async def metrics(_: web.Request) -> web.Response:
        name = args.served_model_name or args.model
        text = (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="{name}"}} {state["waiting"]}\n'
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{name}"}} {state["running"]}\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{model_name="{name}"}} '
            f"{min(1.0, state['running'] / args.max_num_seqs)}\n"
        )
        return web.Response(text=text, headers=headers)

    async def lab_state(_: web.Request) -> web.Response:
        body = {
            "num_requests_waiting": state["waiting"],
            "num_requests_running": state["running"],
            "kv_cache_usage_perc": min(1.0, state["running"] / args.max_num_seqs),
            "group": args.lab_group,
        }
        return web.json_response(body, headers=headers)

    async def fault(request: web.Request) -> web.Response:
        body = await request.json()
        state["mode"] = body.get("mode", "ok")
        state["slow_factor"] = float(body.get("slow_factor", 4.0))
        return web.json_response({"mode": state["mode"]}, headers=headers)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = int(body.get("max_tokens", 4))
        delay = args.token_s * (state["slow_factor"] if state["mode"] == "slow" else 1.0)
        echo = {k: v for k, v in request.headers.items() if k.lower().startswith("x-echo")}
        extra = {**headers, "x-lab-seen-headers": json.dumps(dict(request.headers))}
        state["waiting"] += 1
        async with slots:  # at most --max-num-seqs run; the rest wait, as in vLLM's scheduler
            state["waiting"] -= 1
            state["running"] += 1
            try:
                return await generate(request, body, tokens, delay, echo, extra)
            finally:
                state["running"] -= 1

    async def generate(
        request: web.Request, body: dict, tokens: int, delay: float, echo: dict, extra: dict
    ) -> web.StreamResponse:
        if not body.get("stream"):
            await asyncio.sleep(delay * tokens)
            state["served"] += 1
            return web.json_response(
                {"choices": [{"text": "x" * tokens}], "echo": echo}, headers=extra
            )
        response = web.StreamResponse(headers={**extra, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(tokens):
            await asyncio.sleep(delay)
            event = {"choices": [{"text": "x"}], "t": time.time()}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        state["served"] += 1
        return response

    slots = asyncio.Semaphore(args.max_num_seqs)

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/lab/state", lab_state)
        app.router.add_post("/lab/fault", fault)
        app.router.add_post("/v1/completions", completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        line = {"event": "listening", "host": args.host, "port": port, "group": args.lab_group}
        print(json.dumps(line), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main(sys.argv[1:])
