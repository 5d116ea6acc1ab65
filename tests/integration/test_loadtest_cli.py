"""``labctl loadtest`` / ``labctl monitor`` as real processes against the canned server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

SERVER = Path(__file__).with_name("loadtest_canned_server.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SERVER),
            "--zone",
            "us-west-2a",
            "--group",
            "vllm-us-west-2a-0",
            "--ttft-ms",
            "10",
            "--itl-ms",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _labctl(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labutils.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def test_loadtest_cli_writes_vllm_style_json(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = _labctl(
        "loadtest",
        "--url",
        server_url,
        "--model",
        "ok",
        "--rate",
        "40",
        "--requests",
        "8",
        "--input-tokens",
        "6",
        "--output-tokens",
        "4",
        "--slo",
        "ttft_ms=5000,tpot_ms=5000",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "p50_ttft_ms" in done.stdout and "us-west-2a" in done.stdout
    data = json.loads(out.read_text())
    assert data["completed"] == 8 and data["num_prompts"] == 8
    assert data["total_output_tokens"] == 32 and data["request_goodput"] > 0
    assert data["request_rate"] == 40 and data["seed"] == 3
    assert data["median_ttft_ms"] > 0 and data["p99_e2el_ms"] >= data["median_e2el_ms"]


def test_loadtest_cli_sweep_and_closed_loop(server_url: str, tmp_path: Path) -> None:
    done = _labctl(
        "loadtest",
        "--url",
        server_url,
        "--model",
        "ok",
        "--concurrency",
        "1,3",
        "--requests",
        "6",
        "--input-tokens",
        "4",
        "--output-tokens",
        "2",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "== sweep" in done.stdout and "c=3" in done.stdout


def test_loadtest_cli_errors_are_one_line(server_url: str) -> None:
    unbounded = _labctl("loadtest", "--url", server_url, "--model", "ok", "--rate", "5")
    assert unbounded.returncode != 0
    assert "unbounded load" in unbounded.stderr and "Traceback" not in unbounded.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    refused = _labctl(
        "loadtest",
        "--url",
        dead,
        "--model",
        "ok",
        "--rate",
        "20",
        "--requests",
        "2",
        "--no-progress",
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "no request succeeded" in refused.stderr and "Cannot connect" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_monitor_cli_writes_series(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "series.csv"
    done = _labctl(
        "monitor",
        "--url",
        f"us-west-2a/vllm-us-west-2a-0={server_url}",
        "--interval",
        "0.3",
        "--duration",
        "0.6",
        "--out",
        str(out),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    series = pd.read_csv(out)
    assert len(series) == 3
    assert set(series["group"]) == {"vllm-us-west-2a-0"}
    assert {"waiting", "running", "kv_cache_usage", "ttft_p95_s"} <= set(series.columns)
