"""``prometheus_frame`` against a small Prometheus ``query_range`` HTTP API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp import web

from labutils.cli import main
from labutils.errors import MetricsError
from labutils.metrics.prometheus import prometheus_frame

# pod -> value of each series family at every step (what Prometheus would compute).
_SERIES = {
    "vllm:num_requests_waiting": {"vllm-us-west-2a-0": 3.0, "vllm-us-west-2b-1": 0.0},
    "vllm:num_requests_running": {"vllm-us-west-2a-0": 8.0, "vllm-us-west-2b-1": 2.0},
    "vllm:kv_cache_usage_perc": {"vllm-us-west-2a-0": 0.5, "vllm-us-west-2b-1": 0.1},
    "vllm:prompt_tokens": {"vllm-us-west-2a-0": 900.0, "vllm-us-west-2b-1": 300.0},
    "vllm:generation_tokens": {"vllm-us-west-2a-0": 120.0, "vllm-us-west-2b-1": 40.0},
    "vllm:request_success": {"vllm-us-west-2a-0": 2.0, "vllm-us-west-2b-1": 1.0},
    "vllm:time_to_first_token_seconds": {"vllm-us-west-2a-0": 0.2},
}


class _FakePrometheus:
    """Answers /api/v1/query_range in Prometheus's JSON format; records the queries."""

    def __init__(self, missing: str = "") -> None:
        self.missing = missing
        self.queries: list[str] = []

    async def query_range(self, request: web.Request) -> web.Response:
        query = request.query["query"]
        self.queries.append(query)
        start, end, step = (float(request.query[k]) for k in ("start", "end", "step"))
        stamps = []
        t = start
        while t <= end:
            stamps.append(t)
            t += step
        result: list[dict[str, Any]] = []
        for family, pods in _SERIES.items():
            if family == self.missing or family + "{" not in query.replace("_total{", "{").replace(
                "_bucket{", "{"
            ):
                continue
            for pod, value in pods.items():
                result.append({"metric": {"pod": pod}, "values": [[s, str(value)] for s in stamps]})
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )


@pytest.fixture
def fake_prometheus() -> Iterator[tuple[str, _FakePrometheus]]:
    fake = _FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query_range", fake.query_range)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_prometheus_series_per_pod_and_zone(fake_prometheus: tuple[str, _FakePrometheus]) -> None:
    url, fake = fake_prometheus
    frame = prometheus_frame(url, start_s=1000.0, end_s=1060.0, step_s=30.0)
    assert len(frame) == 3 * 2  # 3 steps x 2 pods
    row = frame[frame["group"].eq("vllm-us-west-2a-0")].iloc[0]
    assert row["zone"] == "us-west-2a" and row["waiting"] == 3.0
    assert row["generation_tokens_per_s"] == 120.0 and row["ttft_p95_s"] == 0.2
    other = frame[frame["group"].eq("vllm-us-west-2b-1")].iloc[0]
    assert other["zone"] == "us-west-2b" and other["kv_cache_usage"] == pytest.approx(0.1)
    assert any("histogram_quantile(0.95" in q and "[120s]" in q for q in fake.queries)


def test_prometheus_missing_metric_is_named(fake_prometheus: tuple[str, _FakePrometheus]) -> None:
    url, fake = fake_prometheus
    fake.missing = "vllm:kv_cache_usage_perc"
    with pytest.raises(MetricsError, match="vllm:kv_cache_usage_perc has no series"):
        prometheus_frame(url, start_s=0.0, end_s=10.0, step_s=5.0)
    with pytest.raises(MetricsError, match=re.escape("GET http://127.0.0.1:1/api/v1/query_range")):
        prometheus_frame("http://127.0.0.1:1", start_s=0.0, end_s=1.0, step_s=1.0)


def test_monitor_cli_reads_prometheus(
    fake_prometheus: tuple[str, _FakePrometheus],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = fake_prometheus
    out = tmp_path / "series.csv"
    code = main(
        ["monitor", "--prometheus", url, "--duration", "60", "--interval", "15", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "vllm-us-west-2a-0" in printed and "Jain index): 0.80" in printed
    series = pd.read_csv(out)
    assert set(series["zone"]) == {"us-west-2a", "us-west-2b"}
