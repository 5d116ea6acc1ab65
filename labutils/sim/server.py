"""vLLM's OpenAI-compatible HTTP API in front of a :class:`SimEngine` (aiohttp).

Endpoints and error shapes follow ``vllm serve`` (``vllm/entrypoints/openai/api_server.py`` in
the vLLM repository). Lab-private endpoints: ``POST /lab/fault`` and
``GET /lab/state``. Every response says it is simulated (``x-lab-simulated`` headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import re
import socket
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from labutils.catalog import gpu as lookup_gpu
from labutils.catalog import model as lookup_model
from labutils.errors import ConfigError, SimulatorError
from labutils.sim.engine import FINISHED, SimEngine, SimRequest
from labutils.sim.metrics import EngineMetrics
from labutils.sim.perf import (
    BLOCK_SIZE_TOKENS,
    FRONTEND_LATENCY_S,
    EngineConfig,
    load_calibration,
    plan_memory,
)

__all__ = [
    "OWNED_BY",
    "EngineServer",
    "ServeOptions",
    "build_engine",
    "count_prompt_tokens",
    "start_servers",
]

OWNED_BY = "vllm-lws-lab-simulator"
_VERSION = "0.33.0+vllm-lws-lab-sim"
# vLLM answers "vllm-<version>-<hash>"; ours says it is simulated.
_SYSTEM_FINGERPRINT = "vllm-0.33.0-simulated"

# Fields vLLM 0.32 sends as null for the features the simulator does not model, so response
# shapes match the real engine's (tests/data/real-vllm-0.32.0-cpu-contract.json, recorded by
# labutils.realengine.contract). Per object: top level, choice, chat message, usage.
_NULL_COMPLETION_TOP = ("service_tier", "kv_transfer_params", "ec_transfer_params", "metrics")
_NULL_CHAT_TOP = (*_NULL_COMPLETION_TOP, "prompt_logprobs", "prompt_token_ids", "prompt_text")
_NULL_COMPLETION_CHOICE = ("token_ids", "prompt_logprobs", "prompt_token_ids", "routed_experts")
_NULL_CHAT_CHOICE = ("token_ids", "routed_experts")
_NULL_CHAT_MESSAGE = ("refusal", "annotations", "audio", "function_call", "reasoning")
_NULL_USAGE = ("prompt_tokens_details", "completion_tokens_details")

# Words the simulated model "generates"; one word (with its leading space) per token.
_WORD_TEXT = (
    "the model is simulated and every token comes from a roofline of memory bandwidth compute "
    "and queueing on a virtual gpu so latency follows load while text means nothing at all "
    "batch prefill decode cache block zone replica group leader worker scale route"
)
_WORDS = tuple(_WORD_TEXT.split())

# Median and spread of the simulated answer length when the client does not set ignore_eos:
# a log-normal around 200 tokens, the order of ShareGPT-style chat answers.
_EOS_MEDIAN_TOKENS = 200.0
_EOS_SIGMA = 0.8

# Chat template overhead per message and for the assistant header (Llama-3 style templates
# add about 4 tokens per message plus 3 for the generation prompt).
_CHAT_TOKENS_PER_MESSAGE = 4
_CHAT_TOKENS_PER_REPLY = 3

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_prompt_tokens(text: str) -> int:
    """Approximate a BPE tokenizer: one token per word or symbol, one more per 6 letters, + BOS."""
    return 1 + sum(1 + (len(w) - 1) // 6 for w in _TOKEN_RE.findall(text))


@dataclass(frozen=True)
class ServeOptions:
    """How one simulated ``vllm serve`` presents itself."""

    served_model_name: str
    api_key: str | None = None
    seed: int = 0
    model_load_s: float = 0.0
    zone: str | None = None
    group: str | None = None
    frontend_latency_s: float = FRONTEND_LATENCY_S


def build_engine(
    model: str,
    gpu: str,
    *,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    served_model_name: str | None = None,
    with_metrics: bool = True,
    calibration: str | None = None,
) -> SimEngine:
    """Check a configuration as ``vllm serve`` would and build its engine (not started).

    ``calibration`` names a file of measured step times (``benchmarks/gpu_step_profile.py``)
    for this GPU and model, interpolated instead of the performance model.

    Raises:
        SimulatorError: unknown model or GPU, a configuration vLLM refuses to load, or a
            calibration file that is unreadable or for another GPU/model/layout.
    """
    try:
        model_spec, gpu_spec = lookup_model(model), lookup_gpu(gpu)
    except ConfigError as exc:
        raise SimulatorError(str(exc)) from None
    cfg = EngineConfig(
        model_spec,
        gpu_spec,
        tensor_parallel_size,
        pipeline_parallel_size,
        max_num_seqs,
        max_num_batched_tokens,
        max_model_len,
        gpu_memory_utilization,
    )
    if calibration:
        cal = load_calibration(calibration)
        cfg = dataclasses.replace(cfg, calibration=cal)
        if not cal.matches(cfg):
            raise SimulatorError(
                f"calibration file {calibration} is for {cal.model} on one {cal.gpu}, not "
                f"{model_spec.alias} on {gpu_spec.name} at TP={tensor_parallel_size} "
                f"PP={pipeline_parallel_size}; record one with benchmarks/gpu_step_profile.py"
            )
    plan = plan_memory(cfg)
    metrics = None
    if with_metrics:
        metrics = EngineMetrics(
            served_model_name or model,
            plan.max_model_len,
            num_gpu_blocks=plan.num_gpu_blocks,
            block_size=BLOCK_SIZE_TOKENS,
            kv_cache_bytes=plan.kv_cache_bytes,
            gpu_memory_utilization=gpu_memory_utilization,
            gpu=gpu_spec.name,
            hf_id=model_spec.hf_id,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
        )
    return SimEngine(cfg, plan, metrics)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, err_type: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param


def _error_response(
    status: int, message: str, err_type: str, param: str | None = None
) -> web.Response:
    # vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}.
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return web.json_response(body, status=status)


class EngineServer:
    """One simulated ``vllm serve`` (engine + HTTP app) listening on one port."""

    def __init__(self, engine: SimEngine, options: ServeOptions) -> None:
        self.engine = engine
        self.options = options
        self.fault = "ok"
        self.port: int | None = None
        self.host: str | None = None
        self._ready_at = time.monotonic() + options.model_load_s
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind ``host:port`` (0 picks a free port), start the engine; return the port."""
        self._ready_at = time.monotonic() + self.options.model_load_s
        self.engine.start()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise SimulatorError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.host, self.port = host, sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop serving and stop the engine."""
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def loaded(self) -> bool:
        """Whether the simulated model load has finished."""
        return time.monotonic() >= self._ready_at

    # --- app --------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_and_auth], client_max_size=64 * 1024**2)
        app.on_response_prepare.append(self._add_headers)
        r = app.router
        r.add_get("/health", self._health)
        r.add_get("/metrics", self._metrics)
        r.add_get("/version", self._version)
        r.add_get("/v1/models", self._models)
        r.add_post("/v1/completions", self._completions)
        r.add_post("/v1/chat/completions", self._chat)
        r.add_post("/lab/fault", self._set_fault)
        r.add_get("/lab/state", self._state)
        return app

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h["x-lab-simulated"] = "true"
        h["x-lab-simulated-gpu"] = self.engine.cfg.gpu.name
        if self.options.zone:
            h["x-lab-zone"] = self.options.zone
        if self.options.group:
            h["x-lab-group"] = self.options.group

    @web.middleware
    async def _errors_and_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = self.options.api_key
        # vLLM's api-key middleware answers exactly this for /v1 paths.
        bad_key = request.headers.get("Authorization", "") != f"Bearer {key}"
        if key and request.path.startswith("/v1/") and bad_key:
            return web.json_response({"error": "Unauthorized"}, status=401)
        if request.path.startswith("/v1/") and not self.loaded:
            return _error_response(503, "model is still loading", "ServiceUnavailableError")
        try:
            return await handler(request)
        except _HTTPError as exc:
            return _error_response(exc.status, exc.message, exc.err_type, exc.param)
        except web.HTTPException as exc:
            if exc.status not in (404, 405):
                raise
            # vLLM's FastAPI app answers unknown paths and methods with {"detail": reason}.
            return web.json_response({"detail": exc.reason}, status=exc.status)

    async def _health(self, request: web.Request) -> web.Response:
        ok = self.loaded and self.fault != "unhealthy"
        return web.Response(status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        metrics = self.engine.metrics
        body = metrics.exposition() if metrics is not None else b""
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": _VERSION})

    async def _models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.options.served_model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": OWNED_BY,
            "root": self.engine.cfg.model.hf_id,
            "parent": None,
            "max_model_len": self.engine.plan.max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{uuid.uuid4().hex[:16]}",
                    "object": "model_permission",
                    "created": int(time.time()),
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        return web.json_response({"object": "list", "data": [card]})

    async def _set_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        mode = body.get("mode")
        if mode not in ("ok", "unhealthy", "slow"):
            raise _HTTPError(
                400, f"mode must be ok, unhealthy or slow, got {mode!r}", "BadRequestError", "mode"
            )
        factor = body.get("slow_factor", 4.0) if mode == "slow" else 1.0
        if not isinstance(factor, int | float) or isinstance(factor, bool) or factor < 1:
            raise _HTTPError(
                400,
                f"slow_factor must be a number >= 1, got {factor!r}",
                "BadRequestError",
                "slow_factor",
            )
        self.fault = mode
        self.engine.slow_factor = float(factor)
        return web.json_response({"mode": mode, "slow_factor": float(factor)})

    async def _state(self, request: web.Request) -> web.Response:
        e = self.engine
        return web.json_response(
            {
                "loaded": self.loaded,
                "fault": self.fault,
                "slow_factor": e.slow_factor,
                "num_requests_waiting": len(e.waiting),
                "num_requests_running": len(e.running),
                "kv_cache_usage_perc": e.kv_cache_usage,
                "num_gpu_blocks": e.plan.num_gpu_blocks,
                "num_preemptions": e.preemptions,
                "steps": e.steps,
                "model_busy_s": e.busy_s,
                "step_lag_s_mean": e.step_lag_s_mean,
                "step_lag_s_max": e.lag_s_max,
                "step_wall_s": e.wall_s,
                "step_timing_error": e.timing_error,
                "zone": self.options.zone,
                "group": self.options.group,
            }
        )

    # --- generation -------------------------------------------------------------------------
    def _check_model(self, body: dict[str, Any]) -> str:
        name = body.get("model") or self.options.served_model_name
        if name != self.options.served_model_name:
            raise _HTTPError(
                404,
                f"The model `{name}` does not exist. "
                f"Valid aliases: {self.options.served_model_name}.",
                "NotFoundError",
                "model",
            )
        return str(name)

    def _new_request(self, body: dict[str, Any], prompt_tokens: int, digest: int) -> SimRequest:
        max_len = self.engine.plan.max_model_len
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = max_len - prompt_tokens
        elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _HTTPError(
                400,
                f"max_tokens must be an integer, got {max_tokens!r}",
                "BadRequestError",
                "max_tokens",
            )
        elif max_tokens < 1:
            raise _HTTPError(
                400,
                f"max_tokens must be at least 1, got {max_tokens}.",
                "BadRequestError",
                "max_tokens",
            )
        # vLLM 0.32 (recorded in tests/data/real-vllm-0.32.0-cpu-contract.json): a prompt that
        # fills the context and max_tokens over max_model_len are refused; a prompt plus
        # max_tokens over it is not: generation stops at the context end (finish "length").
        if prompt_tokens >= max_len:
            raise _HTTPError(
                400,
                f"This model's maximum context length is {max_len} tokens. However, your "
                f"prompt contains at least {prompt_tokens} input tokens, which exceeds this "
                "limit even without any output tokens. Please reduce the length of the input "
                f"prompt. (parameter=input_tokens, value={prompt_tokens})",
                "BadRequestError",
                "input_tokens",
            )
        if max_tokens > max_len:
            raise _HTTPError(
                400,
                f"max_tokens={max_tokens} cannot be greater than max_model_len={max_len}. "
                f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                "BadRequestError",
                "max_tokens",
            )
        max_tokens = min(max_tokens, max_len - prompt_tokens)
        for flag in ("stream", "ignore_eos"):
            if flag in body and not isinstance(body[flag], bool):
                raise _HTTPError(
                    400, f"{flag} must be a boolean, got {body[flag]!r}", "BadRequestError", flag
                )
        if body.get("n", 1) != 1:
            raise _HTTPError(400, "only n=1 is supported by the simulator", "BadRequestError", "n")
        stop_after = max_tokens
        if not body.get("ignore_eos", False):
            rng = random.Random(digest)
            stop_after = max(1, int(rng.lognormvariate(math.log(_EOS_MEDIAN_TOKENS), _EOS_SIGMA)))
        return SimRequest(prompt_tokens, max_tokens, stop_after)

    def _digest(self, text: str) -> int:
        return zlib.crc32(f"{self.options.seed}\x00{text}".encode())

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        model = self._check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_tokens, text = count_prompt_tokens(prompt), prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_tokens, text = len(prompt), ",".join(map(str, prompt))
        else:
            raise _HTTPError(
                400,
                "Either prompt or prompt_embeds must be provided and non-empty "
                "(the simulator takes one string or one list of token ids). (parameter=prompt)",
                "BadRequestError",
                "prompt",
            )
        digest = self._digest(text)
        req = self._new_request(body, prompt_tokens, digest)
        return await self._generate(request, body, req, digest, model, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        model = self._check_model(body)
        messages = body.get("messages")
        if messages is None:
            # A missing required field fails vLLM's request model (pydantic) validation.
            raise _HTTPError(
                400,
                "1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', "
                "'msg': 'Field required'}",
                "Bad Request",
                "body.messages",
            )
        if not isinstance(messages, list) or not messages:
            raise _HTTPError(
                400, "messages must be a non-empty list", "BadRequestError", "messages"
            )
        parts = []
        prompt_tokens = _CHAT_TOKENS_PER_REPLY
        for msg in messages:
            if not isinstance(msg, dict) or "role" not in msg:
                raise _HTTPError(
                    400, "each message needs a role and content", "BadRequestError", "messages"
                )
            content = msg.get("content") or ""
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            prompt_tokens += _CHAT_TOKENS_PER_MESSAGE + count_prompt_tokens(str(content)) - 1
            parts.append(f"{msg['role']}:{content}")
        digest = self._digest("\n".join(parts))
        req = self._new_request(body, prompt_tokens, digest)
        return await self._generate(request, body, req, digest, model, chat=True)

    async def _generate(
        self,
        request: web.Request,
        body: dict[str, Any],
        req: SimRequest,
        digest: int,
        model: str,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        # vLLM's API server tokenizes and hands the request to the engine core over ZMQ before
        # the engine sees it (and its TTFT clock starts): the frontend latency.
        await asyncio.sleep(self.options.frontend_latency_s)
        req.arrival_s = time.monotonic()
        self.engine.submit(req)
        try:
            if body.get("stream", False):
                return await self._stream(request, body, req, digest, rid, created, model, chat)
            words = []
            while (index := await req.tokens_out.get()) != FINISHED:
                words.append(_word(digest, index))
            text = "".join(words)
            choice: dict[str, Any] = {"index": 0, "logprobs": None}
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                message.update(dict.fromkeys(_NULL_CHAT_MESSAGE))
                choice["message"] = message
            else:
                choice["text"] = text
            choice["finish_reason"] = req.finished_reason
            choice["stop_reason"] = None
            choice.update(dict.fromkeys(_NULL_CHAT_CHOICE if chat else _NULL_COMPLETION_CHOICE))
            usage: dict[str, Any] = {**_usage(req), **dict.fromkeys(_NULL_USAGE)}
            payload: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
                "system_fingerprint": _SYSTEM_FINGERPRINT,
            }
            payload.update(dict.fromkeys(_NULL_CHAT_TOP if chat else _NULL_COMPLETION_TOP))
            return web.json_response(payload)
        finally:
            self.engine.abort(req)  # no-op when finished; frees blocks when the client left

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        req: SimRequest,
        digest: int,
        rid: str,
        created: int,
        model: str,
        chat: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"

        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(delta_text: str | None, finish: str | None, role: bool = False) -> bytes:
            # vLLM 0.32's chunks: the chat role chunk carries prompt_* at the top level and
            # no token_ids; other chunks carry token_ids (and prompt_token_ids for
            # completions); stop_reason comes with every completion chunk but only with the
            # final chat chunk.
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                if delta_text is not None:
                    delta["content"] = delta_text
                choice["delta"] = delta
                if not role:
                    choice["token_ids"] = None
                if finish is not None:
                    choice["stop_reason"] = None
            else:
                choice["text"] = delta_text or ""
                choice.update(stop_reason=None, prompt_token_ids=None, token_ids=None)
            payload: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice],
            }
            if role:
                payload.update(prompt_token_ids=None, prompt_text=None)
            if finish is not None and not include_usage:
                # Without a usage chunk, vLLM puts the fingerprint on the final chunk.
                payload["system_fingerprint"] = _SYSTEM_FINGERPRINT
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        with contextlib.suppress(ConnectionResetError):
            if chat:
                await resp.write(chunk("", None, role=True))
            # Each token goes out as soon as the engine emits it (vLLM streams every engine
            # output at once, stream_interval=1). The engine queues the last token and FINISHED
            # in the same step, so the last token travels with finish_reason, as vLLM's final
            # delta does, without holding any token back for a step.
            sent_finish = False
            while (index := await req.tokens_out.get()) != FINISHED:
                last = req.finished_reason is not None and index == req.output_tokens - 1
                finish = req.finished_reason if last else None
                await resp.write(chunk(_word(digest, index), finish))
                sent_finish = sent_finish or last
            if not sent_finish:  # aborted (engine stopped) before its last token
                await resp.write(chunk("", req.finished_reason))
            if include_usage:
                usage = {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(req),
                    "system_fingerprint": _SYSTEM_FINGERPRINT,
                }
                await resp.write(
                    b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp


def _word(digest: int, index: int) -> str:
    return " " + _WORDS[(digest + index * 2654435761) % len(_WORDS)]


def _usage(req: SimRequest) -> dict[str, int]:
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": req.output_tokens,
        "total_tokens": req.prompt_tokens + req.output_tokens,
    }


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        # vLLM reports a malformed body as a request validation error located in the body.
        raise _HTTPError(
            400,
            f"1 validation error:\n  {{'type': 'json_invalid', 'loc': 'body.{exc.pos}', "
            f"'msg': 'JSON decode error', 'ctx': {{'error': '{exc.msg}'}}}}",
            "Bad Request",
            f"body.{exc.pos}",
        ) from None
    except UnicodeDecodeError as exc:
        raise _HTTPError(400, f"request body is not UTF-8: {exc}", "Bad Request", "body") from None
    if not isinstance(body, dict):
        raise _HTTPError(400, "request body must be a JSON object", "BadRequestError")
    return body


async def start_servers(
    engines: Sequence[SimEngine],
    options: Sequence[ServeOptions],
    host: str = "127.0.0.1",
    port: int = 0,
) -> list[EngineServer]:
    """Start one server per engine on ``port``, ``port + 1``, ... (or free ports when 0).

    Raises:
        SimulatorError: a port cannot be bound (the servers already started are stopped).
    """
    servers: list[EngineServer] = []
    try:
        for i, (engine, opts) in enumerate(zip(engines, options, strict=True)):
            server = EngineServer(engine, opts)
            await server.start(host, port + i if port else 0)
            servers.append(server)
    except BaseException:
        await asyncio.gather(*(s.stop() for s in servers))
        raise
    return servers
