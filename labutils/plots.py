"""Matplotlib figures of load tests and metric series; each takes DataFrames, returns a Figure.

Inputs are the frames the lab produces: ``LoadSummary.to_frame()``, ``LoadTestResult.to_frame()``
(per request), ``sweep_frame(...)``, ``metrics_frame(...)`` and ``load_distribution(...)``.
Figures are created with :class:`matplotlib.figure.Figure` (no pyplot state), so they work the
same in notebooks, scripts and tests with the Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from labutils.errors import LabError

__all__ = [
    "knee_index",
    "latency_cdf",
    "latency_percentiles",
    "latency_throughput",
    "load_share",
    "timeline",
]


def _need(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise LabError(f"{what}: frame lacks column(s) {', '.join(missing)}; has {list(frame)}")


def latency_percentiles(
    summary: pd.DataFrame,
    *,
    metric: str = "ttft",
    scope: str = "zone",
    percentiles: Sequence[int] = (50, 90, 95, 99),
) -> Figure:
    """Grouped bars: one group per zone (or group/endpoint), one bar per percentile (ms).

    Args:
        summary: ``LoadSummary.to_frame()``.
        metric: ``ttft``, ``tpot``, ``itl``, ``e2el`` or ``send_lag``.
        scope: ``zone``, ``group``, ``endpoint`` or ``all``.
    """
    columns = [f"p{p}_{metric}_ms" for p in percentiles]
    _need(summary, ["scope", "key", *columns], "latency_percentiles")
    rows = summary[summary["scope"].eq(scope)]
    fig = Figure(figsize=(7, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / len(columns)
    x = np.arange(len(rows))
    for i, (p, column) in enumerate(zip(percentiles, columns, strict=True)):
        ax.bar(x + i * width, rows[column].to_numpy(float), width, label=f"p{p}")
    ax.set_xticks(x + width * (len(columns) - 1) / 2, rows["key"].astype(str).tolist())
    ax.set_ylabel(f"{metric.upper()} (ms)")
    ax.set_title(f"{metric.upper()} percentiles per {scope}")
    ax.legend(ncols=len(columns), fontsize="small")
    fig.tight_layout()
    return fig


def knee_index(throughput: ArrayLike, latency: ArrayLike) -> int:
    """Index of the knee of a latency–throughput curve (sorted by throughput).

    The point farthest below the chord from the first to the last point, after scaling both
    axes to 0..1 (the Kneedle idea): where latency starts to climb faster than throughput.
    """
    x = np.asarray(throughput, dtype=float)
    y = np.asarray(latency, dtype=float)
    if len(x) < 3:
        return len(x) - 1
    xs = (x - x.min()) / (np.ptp(x) or 1.0)
    ys = (y - y.min()) / (np.ptp(y) or 1.0)
    chord = ys[0] + (ys[-1] - ys[0]) * (xs - xs[0]) / ((xs[-1] - xs[0]) or 1.0)
    return int(np.argmax(chord - ys))


def latency_throughput(
    sweep: pd.DataFrame,
    *,
    latency: str = "p99_e2el_ms",
    throughput: str = "output_throughput",
) -> Figure:
    """Latency against throughput over a sweep, with the knee marked.

    Steps where the client fell behind its schedule (``client_on_schedule`` False) are drawn
    hollow: their latency describes the client, not the server.
    """
    _need(sweep, [latency, throughput], "latency_throughput")
    data = sweep.sort_values(throughput)
    x = data[throughput].to_numpy(float)
    y = data[latency].to_numpy(float)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    ax.plot(x, y, "-", color="tab:blue", label=latency)
    on_schedule = (
        data["client_on_schedule"].to_numpy(bool)
        if "client_on_schedule" in data
        else np.ones(len(data), bool)
    )
    ax.scatter(x[on_schedule], y[on_schedule], color="tab:blue", zorder=3)
    if (~on_schedule).any():
        ax.scatter(
            x[~on_schedule],
            y[~on_schedule],
            facecolors="none",
            edgecolors="tab:red",
            zorder=3,
            label="client behind schedule",
        )
    knee = knee_index(x, y)
    ax.scatter(
        [x[knee]],
        [y[knee]],
        s=160,
        marker="*",
        color="tab:orange",
        zorder=4,
        label=f"knee ({x[knee]:.0f}, {y[knee]:.0f})",
    )
    if "step" in data:
        for xi, yi, step in zip(x, y, data["step"].astype(str), strict=True):
            ax.annotate(
                step, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="x-small"
            )
    ax.set_xlabel(throughput.replace("_", " "))
    ax.set_ylabel(latency.replace("_", " "))
    ax.set_title("Latency–throughput")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def timeline(
    series: pd.DataFrame,
    *,
    replicas: pd.DataFrame | None = None,
    latency: str = "ttft_p95_s",
) -> Figure:
    """Queue depth, replicas and a latency quantile per zone over time (three panels).

    Args:
        series: ``metrics_frame(...)``.
        replicas: optional frame with ``time_s``, ``zone``, ``replicas`` (e.g. HPA/LWS status
            polled over time); without it the number of groups scraped per zone is drawn.
        latency: the series column for the bottom panel.
    """
    _need(series, ["time_s", "zone", "group", "waiting", latency], "timeline")
    data = series[series["error"].eq("")] if "error" in series else series
    start = data["time_s"].min()
    fig = Figure(figsize=(8, 6.5))
    axes = fig.subplots(3, 1, sharex=True)
    for zone, part in data.groupby("zone", sort=True):
        by_time = part.groupby("time_s")
        t = by_time["waiting"].sum().index.to_numpy(float) - start
        axes[0].plot(t, by_time["waiting"].sum().to_numpy(float), label=str(zone))
        axes[2].plot(t, by_time[latency].mean().to_numpy(float) * 1e3, label=str(zone))
        if replicas is None:
            axes[1].step(
                t, by_time["group"].nunique().to_numpy(float), where="post", label=str(zone)
            )
    if replicas is not None:
        _need(replicas, ["time_s", "zone", "replicas"], "timeline replicas")
        for zone, part in replicas.sort_values("time_s").groupby("zone", sort=True):
            axes[1].step(
                part["time_s"].to_numpy(float) - start,
                part["replicas"],
                where="post",
                label=str(zone),
            )
    axes[0].set_ylabel("waiting requests")
    axes[1].set_ylabel("replicas (groups)")
    axes[2].set_ylabel(f"{latency.removesuffix('_s')} (ms)")
    axes[2].set_xlabel("time (s)")
    axes[0].legend(fontsize="small", ncols=4)
    fig.tight_layout()
    return fig


def load_share(distribution: pd.DataFrame, *, by: str = "zone") -> Figure:
    """Each zone's share of the generated tokens (bars labelled with the percentage)."""
    _need(distribution, [by, "share"], "load_share")
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.add_subplot()
    shares = distribution["share"].to_numpy(float)
    bars = ax.bar(distribution[by].astype(str).tolist(), shares * 100, color="tab:green")
    ax.bar_label(bars, labels=[f"{s:.0%}" for s in shares])
    if len(shares):
        ax.axhline(100 / len(shares), color="grey", linestyle="--", label="even share")
        ax.legend(fontsize="small")
    ax.set_ylabel("share of generated tokens (%)")
    ax.set_title(f"Load share per {by}")
    fig.tight_layout()
    return fig


def latency_cdf(
    requests: pd.DataFrame,
    *,
    columns: Sequence[str] = ("ttft_s", "e2e_s"),
    by: str | None = None,
) -> Figure:
    """Empirical CDFs (ms) of per-request latencies, one line per column (and per ``by`` value).

    Failed requests have NaN latencies and are left out; the title says how many.
    """
    _need(requests, list(columns) + ([by] if by else []), "latency_cdf")
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    groups = list(requests.groupby(by, sort=True)) if by else [("", requests)]
    for key, part in groups:
        for column in columns:
            values = np.sort(part[column].dropna().to_numpy(float)) * 1e3
            if values.size == 0:
                continue
            label = f"{column.removesuffix('_s')}" + (f" {key}" if by else "")
            ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=label)
    failed = int(requests[list(columns)].isna().any(axis=1).sum())
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"Latency CDF ({failed} failed requests not shown)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
