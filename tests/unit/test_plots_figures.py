"""Plots draw the data they are given (Agg backend, no display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from labutils.errors import LabError
from labutils.figures import (
    knee_index,
    latency_cdf,
    latency_percentiles,
    latency_throughput,
    load_share,
    plot_autoscaling,
    plot_latency_over_time,
    plot_offered_vs_achieved,
    plot_zone_share,
    rolling_quantiles,
    timeline,
)


def _summary() -> pd.DataFrame:
    rows = []
    for scope, key, base in (("all", "*", 100), ("zone", "a", 80), ("zone", "b", 150)):
        row = {"scope": scope, "key": key}
        for p in (50, 90, 95, 99):
            row[f"p{p}_ttft_ms"] = base + p
        rows.append(row)
    return pd.DataFrame(rows)


def test_latency_percentiles_bars_per_zone_and_percentile() -> None:
    fig = latency_percentiles(_summary(), metric="ttft", scope="zone")
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert len(ax.patches) == 2 * 4
    assert heights[0] == 130 and heights[-1] == 249
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert ax.get_title() == "Time to first token percentiles per zone"
    with pytest.raises(LabError, match="p50_e2el_ms"):
        latency_percentiles(_summary(), metric="e2el")


def test_knee_is_where_latency_turns_up() -> None:
    throughput = [10, 20, 30, 40, 42, 43]
    latency = [100, 102, 105, 110, 400, 2000]
    assert knee_index(throughput, latency) == 3
    assert knee_index([1, 2], [1, 2]) == 1


def test_latency_throughput_marks_knee_and_client_saturation() -> None:
    sweep = pd.DataFrame(
        {
            "step": [f"r{i}" for i in range(6)],
            "output_throughput": [10, 20, 30, 40, 42, 43],
            "p99_e2el_ms": [100, 102, 105, 110, 400, 2000],
            "client_on_schedule": [True, True, True, True, True, False],
        }
    )
    fig = latency_throughput(sweep)
    ax = fig.axes[0]
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 6
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    knee = [c for c in scatters if "knee" in c.get_label()]
    assert knee and tuple(knee[0].get_offsets()[0]) == (40.0, 110.0)
    assert any("behind" in c.get_label() for c in scatters)


def test_timeline_has_a_line_per_zone_in_each_panel() -> None:
    t = np.arange(5.0)
    series = pd.DataFrame(
        {
            "time_s": np.concatenate([t, t, t]),
            "zone": ["a"] * 10 + ["b"] * 5,
            "group": ["a-0"] * 5 + ["a-1"] * 5 + ["b-0"] * 5,
            "waiting": np.arange(15.0),
            "ttft_p95_s": np.full(15, 0.2),
            "error": "",
        }
    )
    fig = timeline(series)
    assert len(fig.axes) == 3
    assert all(len(ax.lines) == 2 for ax in fig.axes)
    waiting_a = fig.axes[0].lines[0].get_ydata()
    assert list(waiting_a) == [5.0, 7.0, 9.0, 11.0, 13.0]  # both groups of zone a summed
    assert list(fig.axes[1].lines[0].get_ydata()) == [2.0] * 5
    replicas = pd.DataFrame({"time_s": [0.0, 2.0], "zone": ["a", "a"], "replicas": [1, 3]})
    assert len(timeline(series, replicas=replicas).axes[1].lines) == 1


def test_load_share_and_cdf() -> None:
    dist = pd.DataFrame({"zone": ["a", "b", "c"], "share": [0.5, 0.3, 0.2]})
    ax = load_share(dist).axes[0]
    assert [round(p.get_height()) for p in ax.patches] == [50, 30, 20]
    requests = pd.DataFrame(
        {
            "ttft_s": [0.1, 0.2, np.nan, 0.4],
            "e2e_s": [1.0, 2.0, np.nan, 3.0],
            "zone": ["a", "a", "b", "b"],
        }
    )
    ax = latency_cdf(requests).axes[0]
    assert len(ax.lines) == 2
    assert ax.lines[0].get_ydata()[-1] == 1.0
    assert "1 failed" in ax.get_title()
    assert len(latency_cdf(requests, by="zone").axes[0].lines) == 4


def _requests(n_per_zone: int = 40) -> pd.DataFrame:
    """Requests sent 0.1 s apart per zone; zone b twice as slow, one failure in zone a."""
    rows = []
    for zone, slow in (("a", 1.0), ("b", 2.0)):
        for i in range(n_per_zone):
            rows.append({"sent_s": i * 0.1, "zone": zone, "outcome": "ok",
                         "ttft_s": slow * (0.1 + 0.001 * i), "tpot_s": slow * 0.02})  # fmt: skip
    rows[3].update(outcome="http_5xx", ttft_s=np.nan, tpot_s=np.nan, zone="")
    return pd.DataFrame(rows)


def test_rolling_quantiles_count_and_quantile_per_window() -> None:
    frame = rolling_quantiles(_requests(), "ttft_s", window_s=1.0, step_s=1.0)
    first = frame[(frame["zone"] == "a") & (frame["end_s"] == 1.0)].iloc[0]
    # sent in (0, 1] s: i = 1..10, less the failed i = 3
    assert first["n"] == 9
    expected = np.quantile([0.1 + 0.001 * i for i in (1, 2, 4, 5, 6, 7, 8, 9, 10)], 0.5)
    assert first["p50"] == pytest.approx(expected)
    assert set(frame["zone"]) == {"a", "b"}  # the failed request's empty zone is left out


def test_latency_over_time_draws_p50_and_p99_per_zone() -> None:
    fig = plot_latency_over_time(_requests(), window_s=1.0, step_s=0.5, min_requests=5)
    ttft, tpot = fig.axes
    assert [line.get_label() for line in ttft.lines] == ["a p50", "a p99", "b p50", "b p99"]
    # zone b is twice as slow: its p50 line lies above zone a's at every window
    assert (ttft.lines[2].get_ydata() > ttft.lines[0].get_ydata()).all()
    assert tpot.lines[2].get_ydata()[0] == pytest.approx(40.0)  # 2 x 0.02 s, in ms
    assert "median" in fig._suptitle.get_text()  # type: ignore[union-attr]
    sparse = plot_latency_over_time(_requests(), window_s=1.0, min_requests=50)
    assert not sparse.axes[0].lines  # no window holds 50 requests


def test_offered_vs_achieved_marks_the_knee_and_sample_sizes() -> None:
    sweep = pd.DataFrame(
        {"offered_rps": [8, 16, 24, 32], "offered_output_tokens_per_s": [128, 256, 384, 512],
         "achieved_output_tokens_per_s": [126, 250, 360, 370],
         "ttft_p50_ms": [200, 220, 300, 900], "ttft_p99_ms": [300, 350, 600, 2000],
         "n_requests": [40, 80, 120, 160]}
    )  # fmt: skip
    fig = plot_offered_vs_achieved(sweep, knee=2)
    left, right = fig.axes
    stars = [c for c in left.collections if c.get_label() == "knee"]
    assert stars and tuple(stars[0].get_offsets()[0]) == (384.0, 360.0)
    assert left.lines[0].get_label() == "achieved = offered"
    assert [t.get_text() for t in right.texts] == ["n=40", "n=80", "n=120", "n=160"]
    assert right.get_ylim()[0] == 0
    with pytest.raises(LabError, match="n_requests"):
        plot_offered_vs_achieved(sweep.drop(columns="n_requests"))


def test_zone_share_bins_add_up_to_all_requests_sent() -> None:
    requests = pd.DataFrame(
        {"sent_s": [0.1, 0.2, 0.3, 0.4, 0.6, 0.7], "zone": ["a", "b", "a", "", "b", "b"],
         "outcome": ["ok", "ok", "ok", "http_5xx", "ok", "ok"]}
    )  # fmt: skip
    fig = plot_zone_share(requests, {"fault": 0.35, "recovered": 0.65}, bin_s=0.5)
    ax = fig.axes[0]
    heights = {}
    for patch in ax.patches:
        heights.setdefault(patch.get_x(), []).append(patch.get_height())
    assert [round(sum(h)) for h in heights.values()] == [100, 100]
    # first bin: a 2 of 4, b 1 of 4, failed 1 of 4
    assert sorted(round(h) for h in heights[0.0]) == [25, 25, 50]
    assert len(ax.lines) == 2  # the two marks


def test_autoscaling_figure_puts_ttft_beside_the_replicas() -> None:
    from labutils.loadtest import open_loop
    from labutils.loadtest.sender import LoadTestResult, RequestRecord
    from labutils.monitored_load import MonitoredRun

    records = [
        RequestRecord(index=i, scheduled_s=i * 0.2, sent_s=i * 0.2, first_token_s=i * 0.2 + 0.1,
                      end_s=i * 0.2 + 0.5, outcome="ok", output_tokens=4, zone="a")
        for i in range(50)
    ]  # fmt: skip
    result = LoadTestResult(open_loop(5.0, requests=50), records, "u", "m", True, 100.0, 10.5)
    replicas = pd.DataFrame({"time_s": [100.0, 105.0], "zone": "a", "lws": "x",
                             "replicas": [1, 2], "ready_replicas": [1, 2]})  # fmt: skip
    log = pd.DataFrame({"time_s": [101.0, 103.0], "usage": [2.0, 8.0], "target": [5.0, 5.0],
                        "current_replicas": [1, 1], "desired_replicas": [1, 2]})  # fmt: skip
    fig = plot_autoscaling(MonitoredRun(result, [], replicas, 100.0), log, note="test")
    assert len(fig.axes) == 4
    ttft = fig.axes[1]
    assert "TTFT" in ttft.get_ylabel()
    assert ttft.lines[0].get_ydata()[0] == pytest.approx(100.0)  # every TTFT is 0.1 s
    assert "replicas" in fig.axes[3].get_ylabel()
