"""``python -m labutils.sim serve`` as a real process, driven by the official openai client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEY = "test-key-not-a-secret"


def _start(*flags: str) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    cmd = [sys.executable, "-m", "labutils.sim", "serve", *flags]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[dict[str, Any]] = []
    replicas = int(flags[flags.index("--replicas") + 1]) if "--replicas" in flags else 1
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while len(lines) < replicas:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(
                f"simulator did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        line = proc.stdout.readline()
        if line.strip():
            lines.append(json.loads(line))
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, lines = _start(
        MODEL, "--gpu", "h100", "--port", "0", "--max-model-len", "4096",
        "--api-key", KEY, "--seed", "7", "--lab-zone", "us-west-2a", "--lab-group", "vllm-a-0",
    )  # fmt: skip
    try:
        yield proc, f"http://127.0.0.1:{lines[0]['port']}"
    finally:
        _stop(proc)


def _client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def _http(url: str, data: bytes | None = None, key: str | None = KEY) -> tuple[int, Any, Any]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        body, status, headers = exc.read(), exc.code, exc.headers
    try:
        return status, json.loads(body) if body else None, headers
    except json.JSONDecodeError:
        return status, body.decode(), headers


def test_openai_client_lists_completes_chats_and_streams(server: Any) -> None:
    _, url = server
    client = _client(url)
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].owned_by == "vllm-lws-lab-simulator"

    raw = client.completions.with_raw_response.create(
        model=MODEL, prompt="Say hello to the lab", max_tokens=7, extra_body={"ignore_eos": True}
    )
    assert raw.headers["x-lab-simulated"] == "true"
    assert raw.headers["x-lab-simulated-gpu"] == "h100"
    assert raw.headers["x-lab-zone"] == "us-west-2a"
    assert raw.headers["x-lab-group"] == "vllm-a-0"
    completion = raw.parse()
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].text.split()) == 7

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.completion_tokens <= 5

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    contents, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                contents.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(contents) == 6 and finish == "length"
    assert usage is not None and usage.completion_tokens == 6

    texts = [
        c.choices[0].text
        for c in client.completions.create(model=MODEL, prompt="abc", max_tokens=4, stream=True)
    ]
    assert len([t for t in texts if t]) <= 4


def test_text_is_deterministic_for_a_seed(server: Any) -> None:
    _, url = server
    client = _client(url)
    a = client.completions.create(model=MODEL, prompt="same prompt", max_tokens=8)
    b = client.completions.create(model=MODEL, prompt="same prompt", max_tokens=8)
    c = client.completions.create(model=MODEL, prompt="other prompt", max_tokens=8)
    assert a.choices[0].text == b.choices[0].text
    assert a.choices[0].text != c.choices[0].text


def test_bad_input_gets_vllm_errors_and_the_server_keeps_serving(server: Any) -> None:
    _, url = server
    client = _client(url)
    status, body, _ = _http(f"{url}/v1/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == 400
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="at least 1"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=-3)
    with pytest.raises(openai.BadRequestError, match="cannot be greater than max_model_len=4096"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=10**9)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=MODEL, prompt=list(range(5000)), max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        _client(url, key="wrong").models.list()
    status, body, _ = _http(f"{url}/v1/models", key=None)
    assert status == 401 and body == {"error": "Unauthorized"}
    # Still healthy and serving.
    assert _http(f"{url}/health", key=None)[0] == 200
    ok = client.completions.create(model=MODEL, prompt="still there?", max_tokens=2)
    assert ok.usage is not None and ok.usage.completion_tokens >= 1


def test_fault_injection_and_state(server: Any) -> None:
    _, url = server
    client = _client(url)
    status, body, _ = _http(f"{url}/lab/fault", json.dumps({"mode": "unhealthy"}).encode())
    assert status == 200 and body["mode"] == "unhealthy"
    try:
        assert _http(f"{url}/health", key=None)[0] == 503
        done = client.completions.create(model=MODEL, prompt="during fault", max_tokens=2)
        assert done.choices[0].text  # still serves
    finally:
        _http(f"{url}/lab/fault", json.dumps({"mode": "ok"}).encode())
    assert _http(f"{url}/health", key=None)[0] == 200
    status, body, _ = _http(f"{url}/lab/fault", json.dumps({"mode": "melt"}).encode())
    assert status == 400
    status, state, _ = _http(f"{url}/lab/state", key=None)
    assert status == 200 and state["fault"] == "ok"
    assert {"num_requests_waiting", "num_requests_running", "kv_cache_usage_perc"} <= set(state)


def test_metrics_count_served_traffic(server: Any) -> None:
    _, url = server
    status, text, headers = _http(f"{url}/metrics", key=None)
    assert status == 200 and headers["x-lab-simulated"] == "true"
    assert 'lab_sim_info{gpu="h100"' in text
    line = next(ln for ln in text.splitlines() if ln.startswith("vllm:generation_tokens_total"))
    assert float(line.split()[-1]) > 0


def test_rss_per_engine_process_is_small(server: Any) -> None:
    proc, _ = server
    assert psutil.Process(proc.pid).memory_info().rss < 80 * 1024**2


def test_replicas_model_load_and_refusal() -> None:
    proc, lines = _start(
        "llama-3.1-8b", "--gpu", "h100", "--port", "0", "--max-model-len", "2048",
        "--replicas", "2", "--model-load-s", "1.0", "--lab-group", "g",
    )  # fmt: skip
    try:
        ports = [ln["port"] for ln in lines]
        assert len(set(ports)) == 2 and [ln["group"] for ln in lines] == ["g-0", "g-1"]
        assert _http(f"http://127.0.0.1:{ports[0]}/health")[0] == 503  # still "loading"
        deadline = time.monotonic() + 10
        while _http(f"http://127.0.0.1:{ports[0]}/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for port in ports:
            out = _client(f"http://127.0.0.1:{port}").completions.create(
                model="llama-3.1-8b", prompt="x", max_tokens=2
            )
            assert out.choices[0].text
    finally:
        _stop(proc)

    bad = subprocess.run(
        [sys.executable, "-m", "labutils.cli", "sim", "serve", "llama-2-13b", "--gpu", "a10g"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "does not fit" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
