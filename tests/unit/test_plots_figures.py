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
