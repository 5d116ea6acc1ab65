"""Summaries from recorded requests: percentiles, window, goodput, client health."""

from __future__ import annotations

import pytest

from labutils.errors import LoadTestError
from labutils.loadtest.schedule import open_loop
from labutils.loadtest.sender import LoadTestResult, RequestRecord
from labutils.loadtest.summary import Slo, client_health, parse_slo, summarize


def _result(lag_s: float, *, failed_every: int = 0) -> LoadTestResult:
    schedule = open_loop(100, arrival="constant", requests=100, input_tokens=4, output_tokens=5)
    records = []
    for i, at in enumerate(schedule.offsets_s.tolist()):
        sent = at + lag_s * (i / 99)  # the lag grows to lag_s: a client falling behind
        r = RequestRecord(index=i, scheduled_s=at, sent_s=sent, zone="a" if i % 2 else "b")
        if failed_every and i % failed_every == 0:
            r.outcome, r.status, r.end_s = "http_5xx", 500, sent + 0.01
        else:
            r.chunk_times_s = [sent + 0.1 + 0.02 * k for k in range(5)]
            r.first_token_s, r.end_s = r.chunk_times_s[0], r.chunk_times_s[-1]
            r.outcome, r.status, r.prompt_tokens, r.output_tokens = "ok", 200, 4, 5
        records.append(r)
    return LoadTestResult(schedule, records, "http://x", "m", True, 0.0, 2.0)


def test_percentiles_throughput_and_errors() -> None:
    summary = summarize(_result(0.0, failed_every=10), slo=Slo(ttft_ms=150, tpot_ms=30))
    rows = summary.to_frame().set_index(["scope", "key"])
    overall = rows.loc[("all", "*")]
    assert (overall["requests"], overall["completed"], overall["n_http_5xx"]) == (100, 90, 10)
    assert overall["median_ttft_ms"] == pytest.approx(100)
    assert overall["median_tpot_ms"] == pytest.approx(20)
    assert overall["p99_itl_ms"] == pytest.approx(20)
    assert overall["median_e2el_ms"] == pytest.approx(180)
    # Window: first send (0) to last completion (0.99 + 0.18 s).
    assert overall["request_throughput"] == pytest.approx(90 / 1.17)
    assert overall["total_output_tokens"] == 450
    assert overall["good_requests"] == 90 and overall["goodput_share"] == pytest.approx(0.9)
    assert rows.loc[("zone", "a"), "requests"] == 50
    strict = summarize(_result(0.0), slo=parse_slo("tpot_ms=10")).to_frame().iloc[0]
    assert strict["good_requests"] == 0
    data = summary.to_json()
    assert data["failed"] == 10 and len(data["errors"]) == 10
    assert data["slo"] == {"ttft_ms": 150.0, "tpot_ms": 30.0}


def test_client_health_flags_a_late_sender() -> None:
    on_time = client_health(_result(0.0005))
    assert on_time.on_schedule and "on schedule" in on_time.message
    late = client_health(_result(0.5))
    assert not late.on_schedule and late.message.startswith("CLIENT SATURATED")
    assert late.send_lag_p99_s == pytest.approx(0.495, abs=0.01)
    assert late.achieved_send_rate_rps < late.requested_rate_rps


def test_bad_slo_and_empty_summary() -> None:
    with pytest.raises(LoadTestError, match="ttft_ms=N"):
        parse_slo("latency=5")
    with pytest.raises(LoadTestError, match="not a number"):
        parse_slo("ttft_ms=fast")
    result = _result(0.0)
    result.records.clear()
    with pytest.raises(LoadTestError, match="no requests"):
        summarize(result)
    assert client_health(_result(0.0)).send_lag_max_s == 0.0
