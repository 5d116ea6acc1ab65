"""``python -m labutils.realengine serve``: the real engine behind the twin's engine interface.

It takes the simulator's command line, prints the same ``listening`` line, names its zone and
group in response headers, stops within the twin's 5 s grace period, never outlives a killed
wrapper, and refuses to start more real engines than the machine-wide limit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from labutils.realengine import RealEngineEnv, TinyModel

pytestmark = pytest.mark.contract

MODEL = "meta-llama/Llama-3.1-70B-Instruct"


def _shim(tmp: Path, tiny_model: TinyModel, *extra: str, limit: int = 1) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TMPDIR": str(tmp),  # its own replica registry and logs
        "LAB_TINY_MODEL_DIR": str(tiny_model.path.parent),
        "LAB_VLLM_MAX_REPLICAS": str(limit),
    }
    argv = [sys.executable, "-m", "labutils.realengine", "serve", MODEL, "--port", "0"]
    argv += ["--gpu", "a10g", "--tensor-parallel-size", "4", "--served-model-name", "llama"]
    return subprocess.Popen(
        argv + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_healthy(url: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not healthy after {timeout_s} s"
        time.sleep(0.5)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def shim(
    tmp_path: Path, vllm_env: RealEngineEnv, tiny_model: TinyModel
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    proc = _shim(tmp_path, tiny_model, "--lab-zone", "us-west-2a", "--lab-group", "g-0")
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_serves_with_lab_headers_and_stops_in_the_grace_period(
    shim: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path, tiny_model: TinyModel
) -> None:
    proc, line = shim
    assert line["event"] == "listening" and line["engine"] == "vllm"
    url = f"http://127.0.0.1:{line['port']}"
    _wait_healthy(url)
    body = json.dumps({"model": "llama", "prompt": "hi", "max_tokens": 4}).encode()
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.headers["x-lab-zone"] == "us-west-2a"
        assert resp.headers["x-lab-group"] == "g-0"
        assert json.loads(resp.read())["usage"]["completion_tokens"] == 4

    # The twin's `fail --mode unhealthy`: /health turns 503, requests are still served.
    assert _post(f"{url}/lab/fault", {"mode": "unhealthy"}) == (200, {"mode": "unhealthy"})
    assert _status(f"{url}/health") == 503
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.status == 200
    assert _post(f"{url}/lab/fault", {"mode": "slow"})[0] == 400
    assert _post(f"{url}/lab/fault", {"mode": "ok"})[0] == 200
    assert _status(f"{url}/health") == 200

    # A second real engine over the machine-wide limit (1 here) is refused before starting.
    second = _shim(tmp_path, tiny_model)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2
    assert "the limit is 1 (LAB_VLLM_MAX_REPLICAS)" in err

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5.0  # the twin SIGKILLs after 5 s
    assert _gone(line["engine_pid"], 5)


def test_killed_wrapper_leaks_no_engine(
    shim: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    proc, line = shim
    engine = psutil.Process(line["engine_pid"])
    assert engine.is_running()
    proc.kill()  # what the twin does after its grace period
    proc.wait(timeout=10)
    assert _gone(line["engine_pid"], 15), "vLLM outlived its SIGKILLed wrapper"
