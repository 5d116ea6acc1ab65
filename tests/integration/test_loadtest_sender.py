"""The sender against a real canned streaming server process on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labutils.errors import LoadTestError
from labutils.loadtest import closed_loop, open_loop, run_load, run_sweep, summarize, sweep
from labutils.loadtest.summary import Slo
from labutils.metrics.parse import parse_scrape
from labutils.metrics.scrape import monitor_backend, scrape_urls
from labutils.metrics.series import metrics_frame
from labutils.protocol import MetricsScrape

SERVER = Path(__file__).with_name("loadtest_canned_server.py")


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(SERVER), *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"canned server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """Two canned servers, one per zone (prefill 40 ms, 20 ms per token)."""
    procs = []
    urls = {}
    try:
        for zone in ("zone-a", "zone-b"):
            proc, url = _start(
                "--zone", zone, "--group", f"vllm-{zone}-0", "--ttft-ms", "40", "--itl-ms", "20"
            )
            procs.append(proc)
            urls[zone] = url
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def test_every_failure_is_classified_and_counted(servers: dict[str, str]) -> None:
    schedule = open_loop(40, arrival="constant", requests=12, input_tokens=8, output_tokens=4)
    result = run_load(schedule, servers["zone-a"], "mixed", timeout_s=1.0, progress=False)
    frame = result.to_frame()
    assert len(frame) == 12 and sorted(frame["index"]) == list(range(12))
    # The server cycles ok, 500, 429, reset, stall, reset_mid in arrival order.
    counts = frame["outcome"].value_counts().to_dict()
    assert counts == {"ok": 2, "http_5xx": 2, "http_4xx": 2, "connection_reset": 4, "timeout": 2}
    assert set(frame.loc[frame["outcome"].eq("http_4xx"), "status"]) == {429}
    assert set(frame.loc[frame["outcome"].eq("http_5xx"), "status"]) == {500}
    assert frame.loc[frame["outcome"].eq("timeout"), "error"].str.contains("1 s").all()
    row = summarize(result).to_frame().iloc[0]
    assert (row["requests"], row["completed"], row["failed"]) == (12, 2, 10)
    assert (row["n_timeout"], row["n_connection_reset"], row["n_http_4xx"]) == (2, 4, 2)

    refused = run_load(
        open_loop(50, requests=3, input_tokens=4, output_tokens=2),
        _closed_port(),
        "ok",
        progress=False,
    )
    assert refused.to_frame()["outcome"].tolist() == ["connection_refused"] * 3


def test_streaming_ttft_and_chunk_timing(servers: dict[str, str]) -> None:
    tokens = 8
    schedule = open_loop(20, arrival="constant", requests=6, input_tokens=16, output_tokens=tokens)
    result = run_load(schedule, servers["zone-a"], "ok", progress=False)
    frame = result.to_frame()
    assert frame["outcome"].eq("ok").all()
    assert frame["output_tokens"].eq(tokens).all() and frame["prompt_tokens"].eq(16).all()
    assert frame["chunks"].eq(tokens).all()
    assert frame["zone"].eq("zone-a").all() and frame["group"].eq("vllm-zone-a-0").all()
    ttft, e2e = frame["ttft_s"].median(), frame["e2e_s"].median()
    # Server: 40 ms prefill then 7 gaps of 20 ms. Generous bounds for a loaded machine.
    assert 0.035 < ttft < 0.2
    assert e2e - ttft > 0.7 * 7 * 0.020
    itl = result.itls_s()
    assert len(itl) == 6 * (tokens - 1)
    assert 0.015 < np.median(itl) < 0.08
    np.testing.assert_allclose(frame["tpot_s"], (frame["e2e_s"] - frame["ttft_s"]) / (tokens - 1))

    plain = run_load(schedule, servers["zone-a"], "ok", stream=False, progress=False).to_frame()
    assert plain["outcome"].eq("ok").all()
    # Without streaming the first byte is the whole answer: "TTFT" equals E2E ...
    assert (plain["ttft_s"] == plain["e2e_s"]).all()
    # ... and is far later than the streamed first token.
    assert plain["ttft_s"].median() > ttft + 0.7 * 7 * 0.020


def test_round_robin_over_zones_and_per_zone_summary(servers: dict[str, str]) -> None:
    schedule = open_loop(50, arrival="poisson", requests=10, input_tokens=8, output_tokens=3)
    result = run_load(schedule, list(servers.values()), "ok", progress=False)
    summary = summarize(result, slo=Slo(ttft_ms=10_000, tpot_ms=10_000))
    rows = summary.to_frame().set_index(["scope", "key"])
    assert rows.loc[("zone", "zone-a"), "completed"] == 5
    assert rows.loc[("zone", "zone-b"), "completed"] == 5
    assert rows.loc[("all", "*"), "good_requests"] == 10
    tight = summarize(result, slo=Slo(ttft_ms=0.001)).to_frame().iloc[0]
    assert tight["good_requests"] == 0
    data = summary.to_json()
    assert data["completed"] == 10 and data["total_output_tokens"] == 30
    assert len(data["ttfts"]) == 10 and data["zones"].count("zone-b") == 5
    assert data["request_throughput"] > 0 and data["median_ttft_ms"] > 0


def test_closed_loop_keeps_concurrency(servers: dict[str, str]) -> None:
    schedule = closed_loop(2, requests=6, input_tokens=4, output_tokens=3)
    frame = run_load(schedule, servers["zone-b"], "ok", progress=False).to_frame()
    assert len(frame) == 6 and frame["outcome"].eq("ok").all()
    starts = frame["sent_s"].to_numpy()
    ends = (frame["sent_s"] + frame["e2e_s"]).to_numpy()
    in_flight = [int(((starts <= t) & (ends > t)).sum()) for t in starts]
    assert max(in_flight) == 2


def _bucket_of(value: float, bounds: np.ndarray) -> int:
    return int(np.searchsorted(bounds, value, side="left"))


def test_client_latency_agrees_with_server_histograms(servers: dict[str, str]) -> None:
    url = servers["zone-b"]
    targets = {("zone-b", "vllm-zone-b-0"): url + "/metrics"}
    before = scrape_urls(targets)
    schedule = open_loop(25, arrival="constant", requests=10, input_tokens=8, output_tokens=6)
    frame = run_load(schedule, url, "ok", progress=False).to_frame()
    after = scrape_urls(targets)
    assert frame["outcome"].eq("ok").all()
    series = metrics_frame(before + after, quantiles=(0.5,))
    row = series.iloc[-1]
    assert row["requests_per_s"] > 0 and row["generation_tokens_per_s"] > 0
    for name, column in (
        ("vllm:time_to_first_token_seconds", "ttft_s"),
        ("vllm:e2e_request_latency_seconds", "e2e_s"),
    ):
        bounds, _ = parse_scrape(after[0]).buckets[name]
        server_p50 = row[f"{'ttft' if column == 'ttft_s' else 'e2e'}_p50_s"]
        client_p50 = float(frame[column].median())
        # Same histogram bucket, or the next one up: the client also sees the network.
        gap = _bucket_of(client_p50, bounds) - _bucket_of(server_p50, bounds)
        assert gap in (0, 1), (name, client_p50, server_p50)
        assert client_p50 >= server_p50 * 0.5


def test_scrape_of_dead_endpoint_reports_error() -> None:
    scrapes = scrape_urls({("z", "g"): _closed_port() + "/metrics"}, timeout_s=2.0)
    assert len(scrapes) == 1 and scrapes[0].text == ""
    assert "ClientConnectorError" in (scrapes[0].error or "")


def test_sweep_warmup_and_backend_monitor(servers: dict[str, str]) -> None:
    base = open_loop(20, arrival="constant", requests=6, input_tokens=4, output_tokens=3)
    table = run_sweep(sweep(base, rates_rps=[20, 40]), servers["zone-a"], "ok", progress=False)
    assert table["step"].tolist() == ["constant@20rps", "constant@40rps"]
    assert table["completed"].tolist() == [6, 6]
    assert table["requested_rate_rps"].tolist() == pytest.approx([20, 40])

    result = run_load(base, servers["zone-a"], "ok", progress=False)
    # Requests at 0, 0.05, ..., 0.25 s: a 0.1 s warm-up leaves out the first two.
    assert summarize(result, warmup_s=0.1).to_frame().iloc[0]["requests"] == 4
    with pytest.raises(LoadTestError, match="warm-up"):
        summarize(result, warmup_s=100)

    class _Leaders:
        """Scrapes the canned leaders over HTTP, as the twin backend does."""

        def scrape_metrics(self) -> list[MetricsScrape]:
            return scrape_urls({(z, f"vllm-{z}-0"): u + "/metrics" for z, u in servers.items()})

    series = monitor_backend(_Leaders(), interval_s=0.2, duration_s=0.4, progress=False)
    assert len(series) == 3 * 2 and set(series["zone"]) == {"zone-a", "zone-b"}
    assert series["error"].eq("").all()


def test_open_loop_split_over_worker_processes(servers: dict[str, str]) -> None:
    schedule = open_loop(100, arrival="constant", requests=40, input_tokens=4, output_tokens=3)
    result = run_load(schedule, list(servers.values()), "ok", workers=2, timeout_s=10)
    frame = result.to_frame()
    assert frame["index"].tolist() == list(range(40))
    assert frame["outcome"].eq("ok").all()
    # One start time for both processes: sends follow the shared schedule.
    np.testing.assert_allclose(frame["scheduled_s"], schedule.offsets_s)
    assert frame["send_lag_s"].median() < 0.05
    assert frame["zone"].value_counts().to_dict() == {"zone-a": 20, "zone-b": 20}
    with pytest.raises(LoadTestError, match="open-loop"):
        run_load(closed_loop(2, requests=4), servers["zone-a"], "ok", workers=2)


def test_in_flight_cap_turns_overload_into_send_lag(servers: dict[str, str]) -> None:
    # 10 requests at once; each takes >= 40 ms + 2 x 20 ms; only 2 may be outstanding.
    schedule = open_loop(1000, arrival="constant", requests=10, input_tokens=4, output_tokens=3)
    result = run_load(schedule, servers["zone-a"], "ok", max_in_flight=2, progress=False)
    frame = result.to_frame()
    assert frame["outcome"].eq("ok").all()
    assert result.cap_waits >= 2 and result.max_in_flight == 2
    assert frame["send_lag_s"].max() > 0.1  # the last ones waited for four earlier rounds
    starts = frame["sent_s"].to_numpy()
    ends = (frame["sent_s"] + frame["e2e_s"]).to_numpy()
    assert max(int(((starts <= t) & (ends > t)).sum()) for t in starts) <= 2
    health = summarize(result).client
    assert not health.on_schedule and health.cap_waits == result.cap_waits
    assert "in-flight cap (2)" in health.message
