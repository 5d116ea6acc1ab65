"""labutils.lessons.n03_monitoring: server histograms, client vs server TTFT, the lesson checks."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from labutils.errors import ValidationError
from labutils.lessons.n03_monitoring import (
    PrometheusWindow,
    bucket_of,
    check_client_ttft_covers_server,
    check_every_request_has_outcome,
    check_percentiles_match,
    check_promql_within_bucket,
    check_quantiles_agree,
    check_senders_agree,
    check_sweep_past_knee,
    client_server_ttft,
    fixed_size_manifests,
    outcome_counts,
    server_histograms,
    simulated_label,
)
from labutils.loadtest.schedule import open_loop
from labutils.loadtest.sender import LoadTestResult, RequestRecord
from labutils.monitored_load import MonitoredRun
from labutils.protocol import MetricsScrape

FIXTURE = Path(__file__).parents[1] / "data" / "vllm-0.32.0-cpu-metrics.txt"
FIXTURE_COUNT = 2164  # vllm:time_to_first_token_seconds_count in the recorded scrape
FIXTURE_MEAN_S = 1801.4604887962341 / 2164


def _scrape(time_s: float, group: str = "g-0", zone: str = "z") -> MetricsScrape:
    return MetricsScrape(zone, group, time_s, FIXTURE.read_text())


def _result(ttfts_s: list[float], *, drop_last: bool = False) -> LoadTestResult:
    schedule = open_loop(10, arrival="constant", requests=len(ttfts_s), output_tokens=4)
    records = []
    for i, (at, ttft) in enumerate(zip(schedule.offsets_s.tolist(), ttfts_s, strict=True)):
        r = RequestRecord(index=i, scheduled_s=at, sent_s=at, zone="z", group="g-0")
        r.chunk_times_s = [at + ttft + 0.01 * k for k in range(4)]
        r.first_token_s, r.end_s = r.chunk_times_s[0], r.chunk_times_s[-1]
        r.outcome, r.status, r.output_tokens = "ok", 200, 4
        records.append(r)
    if drop_last:
        records.pop()
    return LoadTestResult(schedule, records, "http://127.0.0.1:1", "m", True, 100.0, 2.0)


def test_server_histograms_subtract_the_baseline_and_count_new_groups_from_zero() -> None:
    same = server_histograms([_scrape(90.0), _scrape(110.0)], since_s=100.0)
    assert same["all"]["server_ttft"].count == 0  # nothing happened between the two scrapes
    late = server_histograms([_scrape(110.0, group="g-1")], since_s=100.0)
    assert late["z"]["server_ttft"].count == FIXTURE_COUNT
    assert late["z"]["server_ttft"].total / FIXTURE_COUNT == pytest.approx(FIXTURE_MEAN_S)


def test_client_server_table_reads_both_sides() -> None:
    ttfts = [0.5 + 0.01 * i for i in range(20)]
    run = MonitoredRun(_result(ttfts), [_scrape(110.0)], pd.DataFrame(), started_at=100.0)
    table = client_server_ttft(run, quantiles=(0.5,)).set_index("zone")
    assert table.loc["all", "client_requests"] == 20
    assert table.loc["all", "server_requests"] == FIXTURE_COUNT
    assert table.loc["all", "client_p50_ms"] == pytest.approx(595.0)
    assert table.loc["all", "client_p50_rank_ms"] == pytest.approx(590.0)  # the 10th of 20
    assert table.loc["all", "server_mean_ms"] == pytest.approx(FIXTURE_MEAN_S * 1e3)
    floor, p50 = table.loc["all", "server_p50_floor_ms"], table.loc["all", "server_p50_ms"]
    assert floor <= p50 and not math.isnan(floor)
    # different request counts on the two sides are a failed lesson, named per zone
    with pytest.raises(ValidationError, match="client saw 20"):
        check_client_ttft_covers_server(table.reset_index())


def _table(client_p50_ms: float) -> pd.DataFrame:
    return pd.DataFrame([{
        "zone": "all", "client_requests": 10, "server_requests": 10, "client_mean_ms": 300.0,
        "server_queue_plus_prefill_mean_ms": 250.0, "client_p50_ms": client_p50_ms,
        "server_p50_ms": 300.0, "server_p50_floor_ms": 250.0,
    }])  # fmt: skip


def test_client_ttft_check() -> None:
    assert check_client_ttft_covers_server(_table(260.0)).startswith("OK")
    with pytest.raises(ValidationError, match=r"p50 TTFT 200\.0 ms below the server's bucket"):
        check_client_ttft_covers_server(_table(200.0))


def test_client_ttft_check_compares_the_request_at_the_servers_rank() -> None:
    # 83 requests, one above 500 ms: histogram_quantile's p99 rank (82.17) lands in the
    # 500-750 ms bucket, while the client's interpolated p99 (495.9 ms) is below its floor;
    # the client's 83rd TTFT (560 ms) is the one to compare.
    row = {"zone": "all", "client_requests": 83, "server_requests": 83, "client_mean_ms": 330.0,
           "server_queue_plus_prefill_mean_ms": 320.0, "client_p99_ms": 495.9,
           "client_p99_rank_ms": 560.0, "server_p99_ms": 502.0,
           "server_p99_floor_ms": 500.0}  # fmt: skip
    assert check_client_ttft_covers_server(pd.DataFrame([row])).startswith("OK")
    with pytest.raises(ValidationError, match=r"p99 TTFT 490\.0 ms below"):
        check_client_ttft_covers_server(pd.DataFrame([row | {"client_p99_rank_ms": 490.0}]))


def test_outcome_check_counts_every_scheduled_request() -> None:
    ok = _result([0.1] * 5)
    assert "all 5" in check_every_request_has_outcome(ok)
    assert outcome_counts(ok).set_index("outcome").loc["ok", "requests"] == 5
    with pytest.raises(ValidationError, match="4 records for 5 scheduled"):
        check_every_request_has_outcome(_result([0.1] * 5, drop_last=True))


def _sweep(achieved: list[float], ttft_p50_ms: list[float]) -> pd.DataFrame:
    rates = [10.0 * (i + 1) for i in range(len(achieved))]
    offered = [16 * r for r in rates]
    return pd.DataFrame({"offered_rps": rates, "offered_output_tokens_per_s": offered,
                         "achieved_output_tokens_per_s": achieved,
                         "ttft_p50_ms": ttft_p50_ms})  # fmt: skip


def test_sweep_check_needs_a_flat_step_after_the_knee_and_a_queue() -> None:
    # 160 -> 320 -> 470 tokens/s follow the offer (gain ~0.9), then +10 tokens/s for +160
    past = _sweep([155.0, 310.0, 450.0, 460.0], [260.0, 280.0, 360.0, 900.0])
    assert "knee at 30 req/s" in check_sweep_past_knee(past)
    with pytest.raises(ValidationError, match="add higher rates"):
        check_sweep_past_knee(_sweep([155.0, 310.0, 460.0], [260.0, 280.0, 300.0]))
    with pytest.raises(ValidationError, match="requests should queue"):
        check_sweep_past_knee(past.assign(ttft_p50_ms=[260.0, 270.0, 280.0, 300.0]))
    with pytest.raises(ValidationError, match="start sweep_rates_rps lower"):
        check_sweep_past_knee(_sweep([400.0, 410.0, 415.0], [900.0, 1500.0, 2500.0]))


def test_percentiles_computed_by_hand_must_equal_the_summary() -> None:
    from labutils.loadtest import summarize

    result = _result([0.1 + 0.01 * i for i in range(20)])
    frame = result.to_frame()
    by_hand = frame.groupby("zone")[["ttft_s", "e2e_s"]].quantile([0.5, 0.99]).unstack() * 1e3
    by_hand.columns = [f"{m.removesuffix('_s')}_p{round(q * 100)}_ms" for m, q in by_hand.columns]
    by_hand.insert(0, "n_requests", frame.groupby("zone").size())
    assert "4 percentiles in 1 zones" in check_percentiles_match(by_hand, summarize(result))
    off = by_hand.copy()
    off.loc["z", "ttft_p99_ms"] += 5.0
    with pytest.raises(ValidationError, match="z ttft_p99_ms"):
        check_percentiles_match(off, summarize(result))
    with pytest.raises(ValidationError, match="requests counted"):
        check_percentiles_match(by_hand.assign(n_requests=19), summarize(result))


def test_senders_agree_within_tolerance_or_say_not_checkable() -> None:
    theirs = _result([0.2] * 10)
    mine = pd.DataFrame({"status": [200] * 10, "ttft_s": [0.21] * 10})
    assert check_senders_agree(mine, theirs).startswith("OK")
    assert check_senders_agree(None, theirs).startswith("not checkable")
    with pytest.raises(ValidationError, match="TTFT p50 500 ms by hand"):
        check_senders_agree(mine.assign(ttft_s=0.5), theirs)
    with pytest.raises(ValidationError, match="a request failed"):
        check_senders_agree(mine.assign(status=[200] * 9 + [503]), theirs)


def test_quantile_columns_must_agree() -> None:
    frame = pd.DataFrame({"by_hand_ms": [1.0, 2.0], "labutils_ms": [1.0, 2.0]})
    assert check_quantiles_agree(frame).startswith("OK: all 2")
    with pytest.raises(ValidationError, match="differ"):
        check_quantiles_agree(frame.assign(labutils_ms=[1.0, 2.5]))


def test_simulated_label() -> None:
    engines = pd.DataFrame([{"zone": "z", "group": "g", "simulated": True, "gpu": "A10G",
                             "model": "m", "tensor_parallel_size": "4",
                             "pipeline_parallel_size": "2"}])  # fmt: skip
    assert simulated_label(engines) == "simulated A10G engines (TP=4, PP=2) serving m"
    assert simulated_label(engines.assign(simulated=False)) == ""


def test_fixed_size_manifests_leave_out_only_the_hpas(tmp_path: Path) -> None:
    out = fixed_size_manifests(tmp_path / "fixed")
    zones = sorted(p.name for p in (out / "zones").iterdir())
    assert zones  # every zone of lab.yaml rendered
    for zone in zones:
        names = {p.name for p in (out / "zones" / zone).iterdir()}
        assert "hpa.yaml" not in names and "lws.yaml" in names


def test_bucket_of_finds_the_interpolation_bucket() -> None:
    bounds = [0.25, 0.5, 0.75, math.inf]  # vLLM's TTFT bounds (s), a few of them
    assert bucket_of(0.1, bounds) == (0.0, 0.25)  # the lowest bucket starts at 0
    assert bucket_of(0.25, bounds) == (0.0, 0.25)  # upper bounds are inclusive (le)
    assert bucket_of(0.3, bounds) == (0.25, 0.5)
    assert bucket_of(0.75, bounds) == (0.5, 0.75)  # histogram_quantile's cap in +Inf's rank
    assert bucket_of(9.0, bounds) == (0.75, math.inf)


def test_promql_and_client_quantiles_within_the_bucket_width() -> None:
    row = {"zone": "z", "metric": "ttft p99", "bucket_from_ms": 250.0, "bucket_to_ms": 500.0}
    close = pd.DataFrame([row | {"promql_ms": 497.0, "client_ms": 431.0}])
    assert check_promql_within_bucket(close).startswith("OK: all 1 PromQL quantiles")
    far = pd.DataFrame([row | {"promql_ms": 497.0, "client_ms": 200.0}])
    # a few-ms bucket: the client's own path (gateway, HTTP) is allowed on top of its width
    narrow = {"zone": "z", "metric": "ttft p99", "bucket_from_ms": 1.0, "bucket_to_ms": 5.0}
    small = pd.DataFrame([narrow | {"promql_ms": 5.0, "client_ms": 11.3}])
    assert check_promql_within_bucket(small).startswith("OK")
    with pytest.raises(ValidationError, match=r"bucket 1..5 ms \(\+1 ms"):
        check_promql_within_bucket(small, slack_ms=1.0)
    with pytest.raises(ValidationError, match=r"z ttft p99: PromQL 497.0 ms, client 200.0 ms"):
        check_promql_within_bucket(far)
    with pytest.raises(ValidationError, match="no quantiles"):
        check_promql_within_bucket(close.iloc[0:0])
    with pytest.raises(ValidationError):  # a missing value never passes
        check_promql_within_bucket(close.assign(promql_ms=math.nan))


def test_prometheus_window_reaches_back_to_the_first_scrape() -> None:
    span = PrometheusWindow(1000.25, 1013.5, pd.DataFrame())
    assert span.duration_s == pytest.approx(13.25)
    assert span.window == "13251ms"  # 1 ms more: the first scrape is inside either way
