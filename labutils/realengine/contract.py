"""The API contract between the simulator and real vLLM: record, reduce to shapes, compare.

A fixed suite of requests (completions, chat, streaming with usage, errors, models, health) is
sent to a server and recorded. Responses are reduced to *shapes* (JSON paths with the types
seen at each) and streams to the sequence of their chunk kinds; ``/metrics`` is reduced to its
families (type, label names, histogram buckets). Two recordings then compare field by field,
so a test can say exactly where the simulator differs from the real engine.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd

from labutils._aio import run_sync
from labutils.errors import EndpointError
from labutils.metrics.parse import families

__all__ = [
    "CORE_METRIC_FAMILIES",
    "SIM_IGNORED_VALUES",
    "SIM_ONLY_FAMILIES",
    "ContractRequest",
    "MetricFamilyShape",
    "RecordedResponse",
    "Recording",
    "compare_metric_families",
    "compare_paths",
    "compare_recordings",
    "contract_requests",
    "json_paths",
    "metric_families",
    "record",
    "record_async",
    "response_paths",
    "stable_values",
    "stream_kinds",
]

_PROMPT = "The time to first token measures"

# The differences the simulator is allowed, for both the recorded and the live contract tier:
# it counts prompt tokens with its own approximate tokenizer, so where the context clamps
# generation the number of generated tokens differs slightly ...
SIM_IGNORED_VALUES: dict[str, list[str]] = {
    "clamp_prompt_plus_max_tokens_over_context": ["completion_tokens"]
}
# ... and it declares itself simulated on purpose (docs/contracts.md).
SIM_ONLY_FAMILIES = frozenset({"lab_sim_info"})

# Families the lab reads (monitoring, HPA, dashboards): a simulator must serve each of them,
# with the real engine's type, labels and buckets. Names as prometheus_client's parser reports
# them (counters without ``_total``).
CORE_METRIC_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:cache_config_info",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    "vllm:num_preemptions",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:request_time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:iteration_tokens_total",
)


@dataclass(frozen=True)
class ContractRequest:
    """One request of the contract suite.

    Attributes:
        name: stable key (``completion``, ``chat_stream``, ``error_unknown_model``, ...).
        method: ``GET`` or ``POST``.
        path: URL path.
        body: JSON body, or a ``str`` sent as-is (to test malformed JSON), or ``None``.
        stream: whether the answer is Server-Sent Events.
    """

    name: str
    method: str
    path: str
    body: dict[str, Any] | str | None = None
    stream: bool = False


def contract_requests(model: str, max_model_len: int = 1024) -> list[ContractRequest]:
    """The request suite for a server that serves ``model`` with ``max_model_len``."""
    # ignore_eos: both engines generate exactly max_tokens, so finish reasons and token
    # counts compare exactly (a random-weight model and the simulator stop at different times).
    usage = {"include_usage": True}
    chat_messages = [{"role": "user", "content": "What does the time to first token measure?"}]
    # "token" repeated: one token per word with the tiny model's tokenizer (and most others).
    long_prompt = " ".join(["token"] * (max_model_len - 40))
    too_long_prompt = " ".join(["token"] * (max_model_len + 40))
    return [
        ContractRequest("models", "GET", "/v1/models"),
        ContractRequest("health", "GET", "/health"),
        ContractRequest(
            "completion",
            "POST",
            "/v1/completions",
            {
                "model": model,
                "prompt": _PROMPT,
                "max_tokens": 8,
                "temperature": 0,
                "ignore_eos": True,
            },
        ),
        ContractRequest(
            "completion_stream",
            "POST",
            "/v1/completions",
            {
                "model": model,
                "prompt": _PROMPT,
                "max_tokens": 8,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": usage,
            },
            stream=True,
        ),
        ContractRequest(
            "completion_stream_no_usage",
            "POST",
            "/v1/completions",
            {
                "model": model,
                "prompt": _PROMPT,
                "max_tokens": 4,
                "ignore_eos": True,
                "stream": True,
            },
            stream=True,
        ),
        ContractRequest(
            "chat",
            "POST",
            "/v1/chat/completions",
            {
                "model": model,
                "messages": chat_messages,
                "max_tokens": 8,
                "temperature": 0,
                "ignore_eos": True,
            },
        ),
        ContractRequest(
            "chat_stream",
            "POST",
            "/v1/chat/completions",
            {
                "model": model,
                "messages": chat_messages,
                "max_tokens": 8,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": usage,
            },
            stream=True,
        ),
        ContractRequest(
            "error_unknown_model",
            "POST",
            "/v1/completions",
            {"model": "no-such-model", "prompt": _PROMPT, "max_tokens": 4},
        ),
        ContractRequest(
            "error_max_tokens_over_context",
            "POST",
            "/v1/completions",
            {"model": model, "prompt": _PROMPT, "max_tokens": max_model_len + 1},
        ),
        # vLLM 0.32 does not refuse prompt + max_tokens > max_model_len: it stops generating
        # at the context end (finish_reason "length"). Only a prompt alone over it is a 400.
        ContractRequest(
            "clamp_prompt_plus_max_tokens_over_context",
            "POST",
            "/v1/completions",
            {"model": model, "prompt": long_prompt, "max_tokens": 64, "ignore_eos": True},
        ),
        ContractRequest(
            "error_prompt_over_context",
            "POST",
            "/v1/completions",
            {"model": model, "prompt": too_long_prompt, "max_tokens": 4},
        ),
        ContractRequest(
            "error_missing_prompt",
            "POST",
            "/v1/completions",
            {"model": model, "max_tokens": 4},
        ),
        ContractRequest(
            "error_missing_messages",
            "POST",
            "/v1/chat/completions",
            {"model": model, "max_tokens": 4},
        ),
        ContractRequest("error_malformed_json", "POST", "/v1/completions", "{not json"),
        ContractRequest("error_unknown_path", "GET", "/v1/no-such-endpoint"),
    ]


@dataclass
class RecordedResponse:
    """What a server answered to one :class:`ContractRequest`.

    Attributes:
        name: the request's name.
        status: HTTP status code.
        content_type: the ``content-type`` without parameters.
        body: parsed JSON body (``None`` for streams and empty bodies; text if not JSON).
        chunks: parsed JSON of each ``data:`` event of a stream (without ``[DONE]``).
        done: whether the stream ended with ``data: [DONE]``.
    """

    name: str
    status: int
    content_type: str
    body: Any = None
    chunks: list[Any] | None = None
    done: bool = False


@dataclass
class Recording:
    """All answers of one server to the contract suite, plus its ``/metrics`` afterwards."""

    url: str
    model: str
    responses: dict[str, RecordedResponse] = field(default_factory=dict)
    metrics_text: str = ""

    def to_frame(self) -> pd.DataFrame:
        """One row per request: status, content type, chunk count, error type."""
        rows = []
        for name, resp in self.responses.items():
            error = resp.body.get("error") if isinstance(resp.body, dict) else None
            rows.append(
                {
                    "request": name,
                    "status": resp.status,
                    "content_type": resp.content_type,
                    "chunks": len(resp.chunks) if resp.chunks is not None else None,
                    "done": resp.done if resp.chunks is not None else None,
                    "error_type": error.get("type") if isinstance(error, dict) else None,
                }
            )
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the fixture format; metrics text is stored separately)."""
        return {
            "url": self.url,
            "model": self.model,
            "responses": {name: asdict(resp) for name, resp in self.responses.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], metrics_text: str = "") -> Recording:
        """Inverse of :meth:`to_json`."""
        return cls(
            url=str(data["url"]),
            model=str(data["model"]),
            responses={name: RecordedResponse(**resp) for name, resp in data["responses"].items()},
            metrics_text=metrics_text,
        )

    def save(self, json_path: str | Path, metrics_path: str | Path | None = None) -> None:
        """Write the responses as JSON (and the metrics scrape as text) fixtures."""
        Path(json_path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
        if metrics_path is not None:
            Path(metrics_path).write_text(self.metrics_text)

    @classmethod
    def load(cls, json_path: str | Path, metrics_path: str | Path | None = None) -> Recording:
        """Read fixtures written by :meth:`save`."""
        metrics = Path(metrics_path).read_text() if metrics_path else ""
        return cls.from_json(json.loads(Path(json_path).read_text()), metrics)


def _parse_sse(text: str) -> tuple[list[Any], bool]:
    chunks: list[Any] = []
    done = False
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            done = True
            continue
        try:
            chunks.append(json.loads(payload))
        except json.JSONDecodeError:
            chunks.append(payload)
    return chunks, done


async def _send(session: aiohttp.ClientSession, url: str, req: ContractRequest) -> RecordedResponse:
    kwargs: dict[str, Any] = {}
    if isinstance(req.body, str):
        kwargs = {"data": req.body, "headers": {"content-type": "application/json"}}
    elif req.body is not None:
        kwargs = {"json": req.body}
    try:
        async with session.request(req.method, url + req.path, **kwargs) as resp:
            text = await resp.text()
            content_type = resp.content_type
            status = resp.status
    except aiohttp.ClientError as exc:
        raise EndpointError(f"{req.method} {url}{req.path}: {exc}; is the server up?") from None
    if req.stream and status == 200:
        chunks, done = _parse_sse(text)
        return RecordedResponse(req.name, status, content_type, None, chunks, done)
    body: Any = None
    if text:
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            body = text
    return RecordedResponse(req.name, status, content_type, body)


async def record_async(
    url: str,
    model: str,
    *,
    max_model_len: int = 1024,
    requests: Iterable[ContractRequest] | None = None,
    timeout_s: float = 120.0,
) -> Recording:
    """Send the contract suite to ``url`` one request at a time and record the answers.

    Raises:
        EndpointError: the server is unreachable.
    """
    url = url.rstrip("/")
    suite = list(requests) if requests is not None else contract_requests(model, max_model_len)
    recording = Recording(url=url, model=model)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for req in suite:
            recording.responses[req.name] = await _send(session, url, req)
        # Engines update their metrics right after a request finishes; give them a moment.
        await asyncio.sleep(0.5)
        metrics = await _send(session, url, ContractRequest("metrics", "GET", "/metrics"))
    if metrics.status != 200 or not isinstance(metrics.body, str):
        raise EndpointError(
            f"GET {url}/metrics answered {metrics.status}; expected Prometheus text"
        )
    recording.metrics_text = metrics.body
    return recording


def record(url: str, model: str, **kwargs: Any) -> Recording:
    """Sync form of :func:`record_async`."""
    return run_sync(record_async(url, model, **kwargs))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "array"
    return "object"


def json_paths(value: Any, prefix: str = "$") -> dict[str, set[str]]:
    """Flatten JSON into ``{path: types seen}``; list items share the path ``[]``.

    ``{"a": [{"b": 1}, {"b": null}]}`` → ``{"$": {object}, "$.a": {array},
    "$.a[]": {object}, "$.a[].b": {int, null}}``.
    """
    out: dict[str, set[str]] = {}

    def walk(node: Any, path: str) -> None:
        out.setdefault(path, set()).add(_type_name(node))
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{path}.{key}")
        elif isinstance(node, list):
            for child in node:
                walk(child, f"{path}[]")

    walk(value, prefix)
    return out


def _merge(target: dict[str, set[str]], more: Mapping[str, set[str]]) -> dict[str, set[str]]:
    for path, types in more.items():
        target.setdefault(path, set()).update(types)
    return target


def stream_kinds(chunks: Iterable[Any]) -> list[str]:
    """The kinds of a stream's chunks, runs collapsed: e.g. ``role, content, finish, usage``.

    ``role``: a chat delta carrying the role; ``finish``: a choice with a ``finish_reason``;
    ``usage``: no choices and a ``usage``; ``content``: anything else.
    """
    kinds: list[str] = []
    for chunk in chunks:
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not choices:
            kind = "usage" if isinstance(chunk, dict) and chunk.get("usage") else "empty"
        elif any(isinstance(c.get("delta"), dict) and "role" in c["delta"] for c in choices):
            kind = "role"
        elif any(c.get("finish_reason") for c in choices):
            kind = "finish"
        else:
            kind = "content"
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def response_paths(resp: RecordedResponse) -> dict[str, set[str]]:
    """The JSON paths of a response: its body, or the union over a stream's chunks."""
    if resp.chunks is None:
        return json_paths(resp.body)
    paths: dict[str, set[str]] = {}
    for chunk in resp.chunks:
        _merge(paths, json_paths(chunk, "$chunk"))
    return paths


def compare_paths(
    expected: Mapping[str, set[str]],
    actual: Mapping[str, set[str]],
    *,
    ignore: Iterable[str] = (),
) -> list[str]:
    """Differences between two path maps, one line each (empty when they match).

    ``expected`` is the reference (the real engine). Paths listed in ``ignore`` (and their
    children) are skipped.
    """
    skipped = tuple(ignore)

    def ignored(path: str) -> bool:
        return any(path == s or path.startswith((s + ".", s + "[")) for s in skipped)

    problems = []
    for path in sorted(set(expected) | set(actual)):
        if ignored(path):
            continue
        if path not in actual:
            problems.append(f"missing {path} ({'|'.join(sorted(expected[path]))})")
        elif path not in expected:
            problems.append(f"extra {path} ({'|'.join(sorted(actual[path]))})")
        elif expected[path] != actual[path]:
            want = "|".join(sorted(expected[path]))
            got = "|".join(sorted(actual[path]))
            problems.append(f"type of {path}: expected {want}, got {got}")
    return problems


@dataclass(frozen=True)
class MetricFamilyShape:
    """What a ``/metrics`` family looks like, without its values."""

    name: str
    type: str
    label_names: frozenset[str]
    buckets: tuple[float, ...] = ()


def metric_families(text: str, prefix: str = "") -> dict[str, MetricFamilyShape]:
    """Parse a Prometheus text scrape into family shapes (names as the parser reports them).

    Counters appear without ``_total``, as ``prometheus_client``'s parser names them.

    Raises:
        MetricsError: the text is not valid Prometheus exposition format.
    """
    shapes: dict[str, MetricFamilyShape] = {}
    for family in families(text):
        if not family.name.startswith(prefix):
            continue
        labels: set[str] = set()
        buckets: set[float] = set()
        for sample in family.samples:
            labels.update(k for k in sample.labels if k not in ("le", "quantile"))
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                buckets.add(float(sample.labels["le"]))
        ordered = tuple(sorted(b for b in buckets if not math.isinf(b)))
        shapes[family.name] = MetricFamilyShape(
            family.name, family.type, frozenset(labels), ordered
        )
    return shapes


def compare_metric_families(
    expected: Mapping[str, MetricFamilyShape],
    actual: Mapping[str, MetricFamilyShape],
    *,
    required: Iterable[str] = (),
) -> list[str]:
    """Differences in type, label names and buckets for families present in both.

    Families of ``actual`` missing from ``expected`` are reported (an invented name); families
    of ``expected`` missing from ``actual`` are reported only when listed in ``required``.
    """
    problems = []
    for name in sorted(required):
        if name in expected and name not in actual:
            problems.append(f"missing family {name}")
    for name in sorted(actual):
        got = actual[name]
        want = expected.get(name)
        if want is None:
            problems.append(f"extra family {name} ({got.type}) not served by the real engine")
            continue
        if want.type != got.type:
            problems.append(f"{name}: type {got.type}, expected {want.type}")
        if want.label_names != got.label_names:
            problems.append(
                f"{name}: labels {sorted(got.label_names)}, expected {sorted(want.label_names)}"
            )
        if want.buckets != got.buckets:
            problems.append(f"{name}: buckets {list(got.buckets)}, expected {list(want.buckets)}")
    return problems


def stable_values(resp: RecordedResponse) -> dict[str, Any]:
    """The values of a response that do not depend on the model's text or on time.

    Status, content type, ``object``, the id prefix, error ``type``/``param``/``code``, finish
    reasons, the streamed role, whether usage adds up and its completion tokens, and a
    FastAPI ``detail``.
    """
    values: dict[str, Any] = {"status": resp.status, "content_type": resp.content_type}
    bodies = resp.chunks if resp.chunks is not None else [resp.body]
    objects, prefixes, finish, roles = set(), set(), set(), set()
    for body in bodies:
        if not isinstance(body, dict):
            continue
        if "object" in body:
            objects.add(body["object"])
        if isinstance(body.get("id"), str) and "-" in body["id"]:
            prefixes.add(body["id"].split("-", 1)[0])
        for choice in body.get("choices") or []:
            if choice.get("finish_reason"):
                finish.add(choice["finish_reason"])
            delta = choice.get("delta") or choice.get("message") or {}
            if isinstance(delta, dict) and delta.get("role"):
                roles.add(delta["role"])
        usage = body.get("usage")
        if isinstance(usage, dict):
            values["usage_adds_up"] = usage.get("prompt_tokens", 0) + usage.get(
                "completion_tokens", 0
            ) == usage.get("total_tokens")
            values["completion_tokens"] = usage.get("completion_tokens")
        error = body.get("error")
        if isinstance(error, dict):
            values.update({f"error.{k}": error.get(k) for k in ("type", "param", "code")})
        if "detail" in body:
            values["detail"] = body["detail"]
    values.update(objects=sorted(objects), id_prefixes=sorted(prefixes))
    values.update(finish_reasons=sorted(finish), roles=sorted(roles))
    if resp.chunks is not None:
        values.update(kinds=stream_kinds(resp.chunks), done=resp.done)
    return values


def compare_recordings(
    expected: Recording,
    actual: Recording,
    *,
    ignore_paths: Iterable[str] = (),
    ignore_values: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """Every difference between two recordings of the suite, one line each.

    Args:
        expected: the reference (the real engine).
        actual: the recording under test (the simulator).
        ignore_paths: JSON paths whose shape may differ (see :func:`compare_paths`).
        ignore_values: per request name, keys of :func:`stable_values` allowed to differ.
    """
    ignore_values = ignore_values or {}
    problems = []
    for name in sorted(set(expected.responses) | set(actual.responses)):
        if name not in actual.responses or name not in expected.responses:
            problems.append(f"{name}: recorded on one side only")
            continue
        want, got = expected.responses[name], actual.responses[name]
        skip = set(ignore_values.get(name, ()))
        want_values, got_values = stable_values(want), stable_values(got)
        for key in sorted(set(want_values) | set(got_values)):
            if key in skip or want_values.get(key) == got_values.get(key):
                continue
            problems.append(
                f"{name}: {key} = {got_values.get(key)!r}, expected {want_values.get(key)!r}"
            )
        problems += [
            f"{name}: {p}"
            for p in compare_paths(response_paths(want), response_paths(got), ignore=ignore_paths)
        ]
    return problems
