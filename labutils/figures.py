"""Every figure of the lab, in one place; each takes DataFrames (or a typed result) -> Figure.

Inputs are the frames the lab produces: ``LoadSummary.to_frame()``, ``LoadTestResult.to_frame()``
(per request), ``sweep_frame(...)``, ``metrics_frame(...)`` and ``load_distribution(...)``.
Figures are created with :class:`matplotlib.figure.Figure` (no pyplot state), so they work the
same in notebooks, scripts and tests with the Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter
from numpy.typing import ArrayLike

from labutils.errors import (
    ConfigError,
    LabError,
)
from labutils.metrics.parse import histograms
from labutils.monitored_load import MonitoredRun
from labutils.targets.rollout import Rollout

__all__ = [
    "knee_index",
    "latency_cdf",
    "latency_percentiles",
    "latency_throughput",
    "load_share",
    "plot_autoscaling",
    "plot_cost_bars",
    "plot_cost_vs_throughput",
    "plot_latency_over_time",
    "plot_offered_vs_achieved",
    "plot_plan",
    "plot_reset",
    "plot_rollout",
    "plot_server_timeline",
    "plot_split",
    "plot_strategies",
    "plot_timeline",
    "plot_tpot_vs_throughput",
    "plot_what_if",
    "plot_zone_share",
    "rolling_quantiles",
    "timeline",
]


def _need(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise LabError(f"{what}: frame lacks column(s) {', '.join(missing)}; has {list(frame)}")


_METRIC_WORDS = {
    "ttft": "Time to first token",
    "tpot": "Time per output token",
    "itl": "Inter-token latency",
    "e2el": "End-to-end latency",
    "send_lag": "Send lag (client behind its schedule)",
}


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
    ax.set_ylabel(f"{metric.upper().replace('E2EL', 'E2E').replace('SEND_LAG', 'send lag')} (ms)")
    where = "over all requests" if scope == "all" else f"per {scope}"
    ax.set_title(f"{_METRIC_WORDS.get(metric, metric)} percentiles {where}")
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


def plot_plan(plan: pd.DataFrame) -> Figure:
    """Bars per zone: GPUs the LWS asks for at start and the NodePool's GPU limit (the most
    the zone may scale to), from :func:`deployment_plan`."""
    import matplotlib.pyplot as plt

    zonal = plan[plan["zone"] != "(all)"]
    zones = sorted(zonal["zone"].unique())
    start = [int(zonal[(zonal["zone"] == z) & (zonal["kind"] == "LeaderWorkerSet")]["gpus"].sum())
             for z in zones]  # fmt: skip
    limit = [int(zonal[(zonal["zone"] == z) & (zonal["kind"] == "NodePool")]["gpus"].sum())
             for z in zones]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = list(range(len(zones)))
    b1 = ax.bar([i - 0.2 for i in x], start, 0.4, label="LWS at start (groups x pods x GPUs)")
    b2 = ax.bar([i + 0.2 for i in x], limit, 0.4, label="NodePool limit (max groups)")
    ax.bar_label(b1, fontsize=8)
    ax.bar_label(b2, fontsize=8)
    ax.set_xticks(x, zones)
    ax.set_ylabel("GPUs (nvidia.com/gpu)")
    ax.set_ylim(0, max([*start, *limit, 1]) * 1.35)  # room for the legend above the bars
    ax.set_title("GPUs per availability zone, read from the rendered manifests", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter shows it once, as the cell's result
    return fig


def plot_rollout(rollout: Rollout) -> Figure:
    """Horizontal bars per group: from first seen to ready, coloured by zone."""
    import matplotlib.pyplot as plt

    frame = rollout.to_frame()
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8.5, 0.45 * max(len(frame), 3) + 1.4))
    colors = {z: f"C{i}" for i, z in enumerate(sorted(frame["zone"].unique()))}
    y = list(range(len(frame)))[::-1]
    for yi, row in zip(y, frame.to_dict("records"), strict=True):
        seen_s, ready_in_s = float(row["seen_s"]), float(row["time_to_ready_s"])
        width = ready_in_s if ready_in_s == ready_in_s else 0.0
        ax.barh(yi, width, left=seen_s, color=colors[row["zone"]], height=0.6)
        ax.annotate(f"{width:.1f} s", (seen_s + width, yi), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(y, frame["group"].tolist())
    ax.set_xlabel("seconds since apply (bar: group created -> all its pods ready)")
    ax.axvline(rollout.apply_s, color="grey", linestyle="--", linewidth=1)
    handles: list[Artist] = [Patch(color=c, label=z) for z, c in colors.items()]
    handles.append(Line2D([], [], color="grey", linestyle="--",
                          label=f"apply returned ({rollout.apply_s:.1f} s)"))  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    what = ("SIMULATED engines: model load + process start" if rollout.target == "local"
            else "real engines: image pull + weight load + /health")  # fmt: skip
    ax.set_title(f"Time to ready per LWS group, all Available after {rollout.total_s:.1f} s\n"
                 f"({what})", fontsize=9)  # fmt: skip
    ax.set_xlim(0, max(rollout.total_s, 0.1) * 1.15)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter shows it once, as the cell's result
    return fig


def plot_split(frames: Mapping[str, pd.DataFrame], *, title: str = "") -> Figure:
    """Measured share per zone (bars) against the weight share (markers), one bar per run.

    Args:
        frames: run label -> :meth:`SplitResult.to_frame`.
        title: the figure title.
    """
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    labels = list(frames)
    zones = list(next(iter(frames.values()))["zone"]) if frames else []
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(zones))
    for i, label in enumerate(labels):
        frame = frames[label].set_index("zone").reindex(zones)
        bars = ax.bar(x + i * width, frame["measured_share"] * 100, width, label=f"{label}")
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in frame["measured_share"]], fontsize="small")
        ax.scatter(
            x + i * width,
            frame["expected_share"] * 100,
            marker="_",
            s=400,
            color="black",
            zorder=3,
            label="by weight" if i == 0 else None,
        )
    ax.set_xticks(x + width * (len(labels) - 1) / 2, zones)
    ax.set_ylabel("share of requests (%)")
    ax.set_title(title or "Requests per zone through the gateway")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_strategies(frame: pd.DataFrame, *, title: str = "") -> Figure:
    """TTFT p99 (and p50) per routing strategy as bars (ms), from :meth:`to_frame`."""
    for column in ("strategy", "ttft_p50_ms", "ttft_p99_ms"):
        if column not in frame:
            raise ConfigError(
                f"plot_strategies: the frame lacks {column!r}; pass StrategyComparison.to_frame()"
            )
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(frame))
    p99 = ax.bar(x - 0.2, frame["ttft_p99_ms"], 0.4, label="TTFT p99", color="tab:red")
    p50 = ax.bar(x + 0.2, frame["ttft_p50_ms"], 0.4, label="TTFT p50", color="tab:blue")
    ax.bar_label(p99, fmt="%.0f", fontsize="small")
    ax.bar_label(p50, fmt="%.0f", fontsize="small")
    ax.set_xticks(x, frame["strategy"])
    ax.set_ylabel("time to first token (ms)")
    ax.set_title(title or "TTFT by routing strategy, one group slowed 4x")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# --- plot --------------------------------------------------------------------------------
_COLORS = {
    "ok": "tab:green",
    "http_5xx": "tab:red",
    "http_4xx": "tab:orange",
    "connection_refused": "tab:purple",
    "connection_reset": "tab:brown",
    "timeout": "tab:gray",
    "stream_error": "tab:pink",
    "client_error": "black",
}


def plot_timeline(
    requests: pd.DataFrame,
    marks: Mapping[str, float] | None = None,
    *,
    bin_s: float = 0.5,
    title: str = "",
) -> Figure:
    """Requests by outcome over time (stacked per ``bin_s`` by send time), events marked.

    Args:
        requests: :meth:`DrillResult.to_frame` (needs ``sent_s`` and ``outcome``).
        marks: instants to draw as vertical lines (``DrillResult.marks``).
        bin_s: width of a time bin.
        title: the figure title (say what ran, e.g. "simulated engines").
    """
    for column in ("sent_s", "outcome"):
        if column not in requests:
            raise ConfigError(
                f"plot_timeline: the frame lacks {column!r}; pass DrillResult.to_frame()"
            )
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    sent = requests["sent_s"].to_numpy(float)
    end = float(np.nanmax(sent)) if len(sent) else 1.0
    edges = np.arange(0.0, end + bin_s, bin_s)
    bottom = np.zeros(max(len(edges) - 1, 0))
    for outcome in [o for o in _COLORS if o in set(requests["outcome"])]:
        counts, _ = np.histogram(sent[requests["outcome"].to_numpy() == outcome], bins=edges)
        ax.bar(
            edges[:-1],
            counts,
            width=bin_s,
            bottom=bottom,
            align="edge",
            color=_COLORS[outcome],
            label=outcome,
        )
        bottom += counts
    styles = {"fault": "red", "detected": "black", "restore": "blue", "recovered": "green"}
    for name, at in (marks or {}).items():
        ax.axvline(at, color=styles.get(name, "grey"), linestyle="--", linewidth=1.2)
        ax.annotate(
            f"{name} {at:.1f}s",
            (at, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize="small",
        )
    ax.set_xlabel("time since the load started (s), by send time")
    ax.set_ylabel(f"requests per {bin_s:g} s")
    ax.set_title(title or "Requests by outcome")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def _round_times(times_s: np.ndarray, gap_s: float = 0.25) -> np.ndarray:
    """Each time replaced by the first time of its round (a new round after a gap > gap_s)."""
    order = np.argsort(times_s)
    out = np.empty_like(times_s)
    current = math.nan
    previous = -math.inf
    for index in order:
        t = times_s[index]
        if t - previous > gap_s:
            current = t
        out[index] = current
        previous = t
    return out


def plot_server_timeline(run: MonitoredRun, *, title: str = "") -> Figure:
    """Four panels on one clock: waiting, running, KV-cache usage per zone, and TTFT.

    The TTFT panel puts the servers' per-interval p50/p95 (from histogram deltas, all zones;
    each a linear interpolation inside one bucket, so only as exact as the bucket bounds, which
    are drawn as dotted lines) beside every request's client-measured TTFT at its send time.
    """
    series = run.series
    ok = series[series["error"].eq("")].copy()
    # one scrape round = the scrapes of all leaders taken together (times differ by ms)
    ok["time_s"] = _round_times(ok["time_s"].to_numpy(float))
    start = run.started_at
    fig = Figure(figsize=(8.5, 8))
    axes = fig.subplots(4, 1, sharex=True)
    for zone, part in ok.groupby("zone", sort=True):
        by_time = part.groupby("time_s")
        t = by_time.size().index.to_numpy(float) - start
        axes[0].plot(t, by_time["waiting"].sum().to_numpy(float), label=str(zone))
        axes[1].plot(t, by_time["running"].sum().to_numpy(float), label=str(zone))
        axes[2].plot(t, by_time["kv_cache_usage"].mean().to_numpy(float) * 100, label=str(zone))
    requests = run.to_frame()
    good = requests[requests["outcome"].eq("ok")]
    axes[3].scatter(good["sent_s"], good["ttft_s"] * 1e3, s=6, alpha=0.4, color="grey",
                    label="client TTFT (each request, at send)")  # fmt: skip
    by_time = ok.groupby("time_s")
    t = by_time.size().index.to_numpy(float) - start
    for column, style in (("ttft_p50_s", "-"), ("ttft_p95_s", "--")):
        values = by_time[column].mean().to_numpy(float) * 1e3
        axes[3].plot(t, values, style, color="tab:red",
                     label=f"server {column.removesuffix('_s').removeprefix('ttft_')} per scrape "
                           "interval (interpolated inside one histogram bucket)")  # fmt: skip
    # The bucket bounds the server quantiles are interpolated between (from the last scrape).
    text = next((sc.text for sc in reversed(run.scrapes) if not sc.error), "")
    ttft_hist = histograms(text).get("vllm:time_to_first_token_seconds") if text else None
    if ttft_hist is not None:
        top_ms = axes[3].get_ylim()[1]
        bounds_ms = [b * 1e3 for b in ttft_hist.bounds if math.isfinite(b) and b * 1e3 <= top_ms]
        for i, bound_ms in enumerate(bounds_ms):
            axes[3].axhline(bound_ms, color="tab:red", linestyle=":", linewidth=0.7, alpha=0.6,
                            label="histogram bucket bounds" if i == 0 else None)  # fmt: skip
    axes[0].set_ylabel("waiting\n(requests)")
    axes[1].set_ylabel("running\n(requests)")
    axes[2].set_ylabel("KV-cache\nusage (%)")
    axes[3].set_ylabel("TTFT (ms)")
    axes[3].set_xlabel("time since the load started (s)")
    axes[0].legend(fontsize="small", ncols=4)
    axes[3].legend(fontsize="x-small")
    fig.suptitle(title or "Server-side metrics during the load (scraped /metrics)")
    fig.tight_layout()
    return fig


# --- plots ---------------------------------------------------------------------------------
def plot_autoscaling(
    run: MonitoredRun, log: pd.DataFrame, *, note: str = "", window_s: float = 3.0
) -> Figure:
    """One timeline: offered load, client TTFT, queue per group vs the target, and replicas.

    The TTFT panel shows every request at its send time and the p50/p99 over rolling
    ``window_s`` windows, so the latency can be read beside the replica count below it.
    """
    start = run.started_at
    fig = Figure(figsize=(9, 9.5))
    axes = fig.subplots(4, 1, sharex=True)
    requests = run.to_frame()
    sent = requests["sent_s"].dropna().to_numpy(float)
    if sent.size:
        edges = np.arange(0.0, math.ceil(sent.max()) + 1.0)
        axes[0].hist(sent, bins=edges, color="tab:grey")
    axes[0].set_ylabel("requests sent\nper second")
    good = requests[requests["outcome"].eq("ok")]
    axes[1].scatter(good["sent_s"], good["ttft_s"] * 1e3, s=5, alpha=0.3, color="grey",
                    label="each request (at send)")  # fmt: skip
    rolling = rolling_quantiles(requests, "ttft_s", window_s=window_s, step_s=1.0)
    rolling = rolling[rolling["n"] >= 5].groupby("end_s")[["p50", "p99"]].median()
    if not rolling.empty:
        axes[1].plot(rolling.index, rolling["p50"] * 1e3, "-", color="tab:blue",
                     label=f"p50 over {window_s:g} s")  # fmt: skip
        axes[1].plot(rolling.index, rolling["p99"] * 1e3, "--", color="tab:red",
                     label=f"p99 over {window_s:g} s")  # fmt: skip
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(ScalarFormatter())
    axes[1].yaxis.set_minor_formatter(NullFormatter())
    axes[1].set_ylabel("client TTFT\n(ms, log scale)")
    axes[1].legend(fontsize="x-small")
    t = log["time_s"].to_numpy(float) - start
    axes[2].plot(t, log["usage"], "o-", ms=3, label="HPA input: average waiting per ready group")
    axes[2].plot(t, log["target"], "--", color="tab:red", label="target (AverageValue)")
    axes[2].set_ylabel("waiting requests\nper group")
    axes[2].legend(fontsize="x-small")
    axes[3].step(t, log["desired_replicas"], where="post", label="HPA desired replicas")
    ready = run.replicas.groupby("time_s")["ready_replicas"].sum()
    axes[3].step(ready.index.to_numpy(float) - start, ready.to_numpy(float), where="post",
                 linestyle=":", label="ready groups (LWS status)")  # fmt: skip
    ups = log[log["desired_replicas"] > log["current_replicas"]]
    downs = log[log["desired_replicas"] < log["current_replicas"]]
    axes[3].scatter(ups["time_s"] - start, ups["desired_replicas"], marker="^", color="tab:green",
                    zorder=3, label="scale up")  # fmt: skip
    axes[3].scatter(downs["time_s"] - start, downs["desired_replicas"], marker="v",
                    color="tab:red", zorder=3, label="scale down")  # fmt: skip
    axes[3].set_ylabel("replicas (groups)")
    axes[3].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[3].set_xlabel("time since the load step started (s)")
    axes[3].legend(fontsize="x-small")
    fig.suptitle("A load step, the latency users saw, and the HPA's answer"
                 + (f"\n{note}" if note else ""), fontsize="medium")  # fmt: skip
    fig.tight_layout()
    return fig


def plot_what_if(frame: pd.DataFrame, *, start_s: float) -> Figure:
    """Replicas over time per behavior policy, on the same recorded queue."""
    fig = Figure(figsize=(8, 3.8))
    ax = fig.add_subplot()
    styles = [("-", 4.0), ("--", 2.0), ("-.", 2.0), (":", 2.5)]
    for i, (policy, part) in enumerate(frame.groupby("policy", sort=False)):
        style, width = styles[i % len(styles)]
        ax.step(part["time_s"] - start_s, part["replicas"], where="post", label=str(policy),
                linestyle=style, linewidth=width, alpha=0.8)  # fmt: skip
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time since the load step started (s)")
    ax.set_ylabel("replicas (groups)")
    ax.set_title("Same recorded queue, different HPA behavior (labutils.kube.hpa)")
    if frame.empty:
        ax.text(0.5, 0.5, "no recorded per-sync queue on this target", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
    if not frame.empty:
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def _simulated_note(frame: pd.DataFrame) -> str:
    gpus = ", ".join(sorted(map(str, frame["gpu"].unique()))) if "gpu" in frame else "?"
    return (
        f"SIMULATED {gpus} engines serving {frame.attrs.get('model', '?')}; "
        f"prices as of {frame.attrs.get('prices_as_of', '?')}"
    )


def plot_cost_vs_throughput(frame: pd.DataFrame) -> Figure:
    """Scatter of USD per million output tokens against output tokens/s per GPU, by layout.

    Each point is one load step of :func:`labutils.sizing.sweep`, labelled with its request rate.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for layout, part in frame.groupby("layout", sort=False):
        points = ax.scatter(
            part["tokens_per_s_per_gpu"], part["usd_per_mtok"], label=str(layout), s=40
        )
        for _, row in part.iterrows():
            ax.annotate(
                f"{row['rate_rps']:.0f}/s",
                (row["tokens_per_s_per_gpu"], row["usd_per_mtok"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=points.get_facecolor()[0],
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output tokens/s per GPU")
    ax.set_ylabel("USD per million output tokens")
    ax.set_title(f"Cost vs throughput per GPU ({_simulated_note(frame)})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter then shows it once, as the cell's result
    return fig


def plot_tpot_vs_throughput(frame: pd.DataFrame, *, slo_tpot_ms: float | None = None) -> Figure:
    """Median TPOT against output tokens/s per GPU, one line per layout, with the SLO line.

    ``frame`` is a sweep frame (:func:`labutils.sizing.sweep`): one row per load step with
    ``layout``, ``tokens_per_s_per_gpu``, ``tpot_p50_ms`` and ``rate_rps``. Steps above the SLO
    are drawn hollow; where a layout's line crosses the SLO line is its knee. ``slo_tpot_ms``
    defaults to the frame's ``slo_tpot_p50_ms`` attribute.

    Raises:
        LabError: a column is missing.
    """
    import matplotlib.pyplot as plt

    _need(frame, ("layout", "tokens_per_s_per_gpu", "tpot_p50_ms", "rate_rps"), "TPOT plot")
    slo = slo_tpot_ms if slo_tpot_ms is not None else frame.attrs.get("slo_tpot_p50_ms")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for layout, part in frame.groupby("layout", sort=False):
        part = part.sort_values("tokens_per_s_per_gpu")
        (line,) = ax.plot(
            part["tokens_per_s_per_gpu"], part["tpot_p50_ms"], "-", label=str(layout), alpha=0.7
        )
        above = part["tpot_p50_ms"] > slo if slo is not None else part["tpot_p50_ms"] < 0
        for hollow, points in ((False, part[~above]), (True, part[above])):
            ax.scatter(
                points["tokens_per_s_per_gpu"],
                points["tpot_p50_ms"],
                s=36,
                facecolors="none" if hollow else line.get_color(),
                edgecolors=line.get_color(),
                zorder=3,
            )
        for _, row in part.iterrows():
            ax.annotate(
                f"{row['rate_rps']:.0f}/s",
                (row["tokens_per_s_per_gpu"], row["tpot_p50_ms"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color=line.get_color(),
            )
    if slo is not None:
        ax.axhline(slo, color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(
            f"SLO: TPOT p50 {slo:g} ms",
            (0.01, slo),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 4),
            fontsize=8,
            color="tab:red",
        )
    ax.set_xlabel("output tokens/s per GPU (engine's own count over each step)")
    ax.set_ylabel("TPOT p50 (ms)")
    ax.set_title(
        f"TPOT against throughput per GPU, hollow = misses the SLO ({_simulated_note(frame)})",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter then shows it once, as the cell's result
    return fig


def plot_cost_bars(frame: pd.DataFrame) -> Figure:
    """Bars of USD per million output tokens per layout at its knee, SLO misses hatched.

    ``frame`` is :func:`labutils.sizing.knee_points` / :meth:`Recommendation.to_frame` (one row
    per layout with ``meets_slo``) or a sweep frame (then each layout's cheapest point is shown).
    """
    import matplotlib.pyplot as plt

    if "meets_slo" in frame:
        best = frame
    else:
        best = frame.sort_values("usd_per_mtok").groupby("layout", sort=False).head(1)
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    meets = best["meets_slo"] if "meets_slo" in best else pd.Series(True, index=best.index)
    bars = ax.bar(
        best["layout"].astype(str),
        best["usd_per_mtok"],
        color=["tab:green" if m else "tab:gray" for m in meets],
    )
    for bar, met in zip(bars, meets, strict=True):
        if not met:
            bar.set_hatch("//")
    ax.bar_label(bars, fmt="$%.3f", fontsize=8)
    ax.set_ylabel("USD per million output tokens")
    ax.set_title(
        f"Cost at each layout's knee; green meets the SLO ({_simulated_note(frame)})", fontsize=9
    )
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter then shows it once, as the cell's result
    return fig


def plot_reset(verified: pd.DataFrame) -> Figure:
    """Bars per kind of item: how many the lab held before the reset and how many are left."""
    import matplotlib.pyplot as plt

    counts = verified.groupby("item", sort=False)["gone"].agg(
        before="size", left=lambda g: int((~g.astype(bool)).sum())
    )
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    x = list(range(len(counts)))
    before = ax.bar(
        [i - 0.2 for i in x], counts["before"], 0.4, label="before reset", color="tab:blue"
    )
    after = ax.bar(
        [i + 0.2 for i in x], counts["left"], 0.4, label="left after reset", color="tab:red"
    )
    ax.bar_label(before, fontsize=8)
    ax.bar_label(after, fontsize=8)
    ax.set_xticks(x, counts.index.tolist())
    ax.set_ylabel("count (probed independently)")
    ax.set_title("What the lab held before the reset and what is left after it", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter shows it once, as the cell's result
    return fig


# --- latency over time, throughput sweep, zone share ------------------------------------------
def rolling_quantiles(
    requests: pd.DataFrame,
    column: str,
    *,
    window_s: float,
    step_s: float,
    quantiles: Sequence[float] = (0.5, 0.99),
    by: str = "zone",
) -> pd.DataFrame:
    """Quantiles of ``column`` over rolling windows of send time, per ``by`` value.

    A window ending at ``t`` holds the successful requests sent in ``(t - window_s, t]``.

    Returns:
        Long frame: ``by``, ``end_s``, ``n`` (requests in the window) and one ``pQ`` column per
        quantile (in the column's unit).
    """
    _need(requests, ["sent_s", "outcome", column, by], "rolling_quantiles")
    ok = requests[requests["outcome"].eq("ok")].dropna(subset=[column])
    rows = []
    if ok.empty:
        return pd.DataFrame(columns=[by, "end_s", "n", *[f"p{round(q * 100)}" for q in quantiles]])
    ends = np.arange(window_s, float(ok["sent_s"].max()) + step_s, step_s)
    for key, part in ok.groupby(by, sort=True):
        sent = part["sent_s"].to_numpy(float)
        values = part[column].to_numpy(float)
        for end in ends:
            inside = values[(sent > end - window_s) & (sent <= end)]
            row: dict[str, object] = {by: key, "end_s": float(end), "n": int(inside.size)}
            for q in quantiles:
                row[f"p{round(q * 100)}"] = (
                    float(np.quantile(inside, q)) if inside.size else math.nan
                )
            rows.append(row)
    return pd.DataFrame(rows)


def plot_latency_over_time(
    requests: pd.DataFrame,
    *,
    window_s: float = 3.0,
    step_s: float = 1.0,
    min_requests: int = 5,
    title: str = "",
) -> Figure:
    """TTFT and TPOT p50 (solid) and p99 (dashed) per zone over rolling windows of send time.

    Args:
        requests: one row per request (``LoadTestResult.to_frame()``: ``sent_s``, ``zone``,
            ``outcome``, ``ttft_s``, ``tpot_s``).
        window_s: the window's length (s); ``step_s``: how far it moves each point.
        min_requests: windows with fewer requests are not drawn (a p99 of 5 values is their
            maximum; the subtitle gives the median count per window).
        title: the figure title.
    """
    _need(requests, ["sent_s", "zone", "outcome", "ttft_s", "tpot_s"], "plot_latency_over_time")
    fig = Figure(figsize=(9, 5.5))
    axes = fig.subplots(2, 1, sharex=True)
    counts = []
    for ax, column, name in ((axes[0], "ttft_s", "TTFT"), (axes[1], "tpot_s", "TPOT")):
        frame = rolling_quantiles(requests, column, window_s=window_s, step_s=step_s)
        frame = frame[frame["n"] >= min_requests]
        counts += frame["n"].tolist()
        for i, (zone, part) in enumerate(frame.groupby("zone", sort=True)):
            color = f"C{i}"
            ax.plot(part["end_s"], part["p50"] * 1e3, "-", color=color, label=f"{zone} p50")
            ax.plot(part["end_s"], part["p99"] * 1e3, "--", color=color, label=f"{zone} p99")
        ax.set_ylabel(f"{name} (ms)")
    if axes[0].lines:
        axes[0].legend(fontsize="x-small", ncols=3)
    axes[1].set_xlabel(f"time since the load started (s): end of a {window_s:g} s window")
    typical = int(np.median(counts)) if counts else 0
    fig.suptitle(
        (title or "Time to first token and time per output token per zone over time")
        + f"\n(rolling {window_s:g} s windows by send time, median {typical} requests per window;"
        f" windows with fewer than {min_requests} not drawn)",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


def plot_offered_vs_achieved(
    sweep: pd.DataFrame, *, knee: int | None = None, title: str = ""
) -> Figure:
    """A rate sweep: achieved against offered output throughput, and TTFT against the rate.

    Args:
        sweep: one row per step with ``offered_rps``, ``offered_output_tokens_per_s``,
            ``achieved_output_tokens_per_s``, ``ttft_p50_ms``, ``ttft_p99_ms``, ``n_requests``.
        knee: row position of the knee (marked with a star in both panels), if declared.
        title: the figure title.
    """
    columns = ["offered_rps", "offered_output_tokens_per_s", "achieved_output_tokens_per_s",
               "ttft_p50_ms", "ttft_p99_ms", "n_requests"]  # fmt: skip
    _need(sweep, columns, "plot_offered_vs_achieved")
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    offered = sweep["offered_output_tokens_per_s"].to_numpy(float)
    achieved = sweep["achieved_output_tokens_per_s"].to_numpy(float)
    top = float(max(offered.max(), achieved.max())) * 1.05 if len(sweep) else 1.0
    left.plot([0, top], [0, top], ":", color="grey", label="achieved = offered")
    left.plot(offered, achieved, "o-", color="tab:blue", label="measured")
    left.set_xlabel("offered output throughput (tokens/s)")
    left.set_ylabel("achieved output throughput (tokens/s)")
    rate = sweep["offered_rps"].to_numpy(float)
    right.plot(rate, sweep["ttft_p50_ms"], "o-", label="TTFT p50")
    right.plot(rate, sweep["ttft_p99_ms"], "s--", label="TTFT p99")
    for x, y, n in zip(rate, sweep["ttft_p99_ms"], sweep["n_requests"], strict=True):
        right.annotate(f"n={int(n)}", (x, y), textcoords="offset points", xytext=(4, 4),
                       fontsize="x-small")  # fmt: skip
    right.set_ylim(bottom=0)
    right.set_xlabel("offered request rate (requests/s)")
    right.set_ylabel("time to first token (ms)")
    if knee is not None and 0 <= knee < len(sweep):
        left.scatter([offered[knee]], [achieved[knee]], marker="*", s=220, color="tab:orange",
                     zorder=4, label="knee")  # fmt: skip
        right.axvline(rate[knee], color="tab:orange", linestyle="--", label="knee")
    left.legend(fontsize="small")
    right.legend(fontsize="small")
    fig.suptitle(title or "Rate sweep: throughput stops following the offered load at the knee",
                 fontsize="medium")  # fmt: skip
    fig.tight_layout()
    return fig


def plot_zone_share(
    requests: pd.DataFrame,
    marks: Mapping[str, float] | None = None,
    *,
    bin_s: float = 0.5,
    title: str = "",
) -> Figure:
    """Share of the requests sent in each time bin that each zone served (failed ones apart).

    Args:
        requests: one row per request with ``sent_s``, ``zone``, ``outcome``
            (e.g. :meth:`DrillResult.to_frame`).
        marks: instants drawn as vertical lines (e.g. fault, detected, restore, recovered).
        bin_s: width of a time bin (s).
        title: the figure title.
    """
    _need(requests, ["sent_s", "zone", "outcome"], "plot_zone_share")
    fig = Figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    sent = requests["sent_s"].to_numpy(float)
    end = float(np.nanmax(sent)) if len(sent) else 1.0
    edges = np.arange(0.0, end + bin_s, bin_s)
    total, _ = np.histogram(sent, bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(total > 0, 100.0 / total, np.nan)
    ok = requests["outcome"].eq("ok").to_numpy()
    zones = sorted(str(z) for z in requests.loc[ok, "zone"].unique())
    bottom = np.zeros(len(edges) - 1)
    for i, zone in enumerate(zones):
        counts, _ = np.histogram(sent[ok & requests["zone"].eq(zone).to_numpy()], bins=edges)
        share = np.nan_to_num(counts * scale)
        ax.bar(edges[:-1], share, width=bin_s, bottom=bottom, align="edge", color=f"C{i}",
               label=f"served by {zone}")  # fmt: skip
        bottom += share
    failed, _ = np.histogram(sent[~ok], bins=edges)
    ax.bar(edges[:-1], np.nan_to_num(failed * scale), width=bin_s, bottom=bottom, align="edge",
           color="lightgrey", hatch="//", edgecolor="tab:red", label="failed")  # fmt: skip
    styles = {"fault": "red", "detected": "black", "restore": "blue", "recovered": "green"}
    for name, at in (marks or {}).items():
        ax.axvline(at, color=styles.get(name, "grey"), linestyle="--", linewidth=1.2)
        ax.annotate(f"{name} {at:.1f}s", (at, 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize="small")  # fmt: skip
    ax.set_ylim(0, 100)
    ax.set_xlabel(f"time since the load started (s), requests by send time in {bin_s:g} s bins")
    ax.set_ylabel("share of the requests sent (%)")
    ax.set_title(title or "Which zone served the traffic, bin by bin")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
