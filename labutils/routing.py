"""Load balancing lessons: the HTTPRoute's weighted split measured per zone, weight changes,
and routing strategies compared under skewed load (a slow group).

The split is measured from the ``x-lab-zone`` header each response carries (set by the
gateway), over a bounded open-loop load; the expected share of a zone is its weight over the
sum of weights, read from the running backend (``status()``), never typed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from labutils.backend import Backend, get_backend
from labutils.config import default_state_dir, lab_target, load_config
from labutils.drills import running_manifests
from labutils.errors import ConfigError, ValidationError
from labutils.loadtest import LoadTestResult, open_loop, run_load

__all__ = [
    "CONFORMANCE_TOLERANCE",
    "SplitResult",
    "StrategyComparison",
    "check_split",
    "check_strategies",
    "compare_strategies",
    "lab_backend",
    "measure_split",
    "plot_split",
    "plot_strategies",
    "set_route_weights",
]

# Gateway API conformance: 5 percentage points per backend (kubernetes-semantics reference).
CONFORMANCE_TOLERANCE = 0.05


@dataclass
class SplitResult:
    """Requests per zone through the gateway against the route's weights."""

    load: LoadTestResult
    weights: dict[str, int]

    def to_frame(self) -> pd.DataFrame:
        """One row per zone: weight, expected_share, requests, measured_share, deviation_pp."""
        frame = self.load.to_frame()
        ok = frame[frame["outcome"] == "ok"]
        total_weight = sum(self.weights.values()) or 1
        rows = []
        for zone, weight in self.weights.items():
            served = int((ok["zone"] == zone).sum())
            measured = served / len(ok) if len(ok) else math.nan
            expected = weight / total_weight
            rows.append(
                {
                    "zone": zone,
                    "weight": weight,
                    "expected_share": round(expected, 4),
                    "requests": served,
                    "measured_share": round(measured, 4),
                    "deviation_pp": round((measured - expected) * 100, 2),
                }
            )
        return pd.DataFrame(rows)


def lab_backend(
    target: str | None = None, *, strategy: str = "weighted", **twin_options: object
) -> Backend:
    """``get_backend(target)`` with the twin's gateway ``strategy`` and options where local.

    On EKS the options do not apply (the Gateway implementation routes; health checks run at
    the manifests' real intervals), so they are dropped there.
    """
    if lab_target(target) == "local":
        return get_backend(target, strategy=strategy, **twin_options)
    return get_backend(target)


def _weights(backend: Backend) -> dict[str, int]:
    status = backend.status()
    if "weight" in status:
        return {str(r["zone"]): int(r["weight"]) for r in status.to_dict("records")}
    return {z: load_config().weight(z) for z in status["zone"]}


def measure_split(
    backend: Backend,
    *,
    requests: int = 1000,
    rate_rps: float = 200.0,
    output_tokens: int = 1,
    seed: int = 0,
) -> SplitResult:
    """Send ``requests`` short requests (Poisson, ``rate_rps``) through the gateway; count zones.

    The split is random per request, so the measured share carries sampling noise of
    ``sqrt(p (1 - p) / n)``: 2.1 points at 500 requests (conformance's count; a 5-point check
    would then fail by chance ~2 % of the time per zone), 1.5 points at 1000.
    """
    if not 0 < requests <= 5000:
        raise ConfigError(f"requests={requests}: give 1..5000")
    weights = _weights(backend)
    ends = backend.endpoints()
    schedule = open_loop(
        rate_rps,
        arrival="poisson",
        requests=requests,
        input_tokens=16,
        output_tokens=output_tokens,
        seed=seed,
    )
    load = run_load(schedule, ends.gateway_url, ends.model, headers=ends.headers, timeout_s=60)
    return SplitResult(load, weights)


def check_split(split: SplitResult, tolerance: float = CONFORMANCE_TOLERANCE) -> pd.DataFrame:
    """Raise unless every zone's measured share is within ``tolerance`` of its weight share.

    Also requires every request to have succeeded and weight-0 zones to get nothing.
    """
    frame = split.to_frame()
    outcomes = split.load.to_frame()["outcome"]
    problems = []
    if (outcomes != "ok").any():
        problems.append(f"{int((outcomes != 'ok').sum())} of {len(outcomes)} requests failed")
    for row in frame.to_dict("records"):
        if row["weight"] == 0 and row["requests"]:
            problems.append(
                f"zone {row['zone']} has weight 0 but served {row['requests']} requests"
            )
        elif not abs(float(row["deviation_pp"])) <= tolerance * 100:
            problems.append(
                f"zone {row['zone']}: {row['measured_share']:.1%} measured vs "
                f"{row['expected_share']:.1%} by weight (> {tolerance:.0%})"
            )
    if problems:
        raise ValidationError(f"weighted split: {problems[0]}", problems)
    return frame


def set_route_weights(backend: Backend, weights: Mapping[str, int]) -> pd.DataFrame:
    """Re-render the manifests with new HTTPRoute ``route_weights`` and apply them.

    The twin applies weight changes live (HAProxy reloads hitlessly); on EKS this is a
    server-side apply of the changed HTTPRoute. Returns the backend's status.
    """
    from labutils.manifests import render

    config = load_config()
    unknown = set(weights) - set(config.zones)
    if unknown:
        raise ConfigError(
            f"route weights for unknown zones {sorted(unknown)}; choose from: "
            f"{', '.join(config.zones)}"
        )
    config = dataclasses.replace(config, route_weights={k: int(v) for k, v in weights.items()})
    state_dir = getattr(backend, "state_dir", None)
    # The twin applies a change live only from the folder it runs (another folder restarts it).
    out = (
        running_manifests(backend) if state_dir else default_state_dir() / "rendered-route-weights"
    )
    render(config, out)
    return backend.apply(out)


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


# --- routing strategies under skew ----------------------------------------------------------
@dataclass
class StrategyComparison:
    """The same skewed load (one slow group) through each routing strategy."""

    slow_group: str
    loads: dict[str, LoadTestResult]

    def to_frame(self) -> pd.DataFrame:
        """One row per strategy: requests, errors, TTFT p50/p99 (ms), share on the slow group."""
        rows = []
        for strategy, load in self.loads.items():
            frame = load.to_frame()
            ok = frame[frame["outcome"] == "ok"]
            ttft = ok["ttft_s"].dropna().to_numpy(float) * 1000
            p50, p99 = np.percentile(ttft, [50, 99]) if ttft.size else (math.nan, math.nan)
            rows.append(
                {
                    "strategy": strategy,
                    "requests": len(frame),
                    "errors": int((frame["outcome"] != "ok").sum()),
                    "ttft_p50_ms": round(float(p50), 1),
                    "ttft_p99_ms": round(float(p99), 1),
                    "share_on_slow_group": round(float((ok["group"] == self.slow_group).mean()), 3)
                    if len(ok)
                    else math.nan,
                }
            )
        return pd.DataFrame(rows)


def compare_strategies(
    target: str | None = None,
    strategies: Sequence[str] = ("weighted", "least-request", "queue-aware"),
    *,
    slow_group: str | None = None,
    rate_rps: float = 15.0,
    duration_s: float = 6.0,
    input_tokens: int = 128,
    output_tokens: int = 16,
    seed: int = 0,
    **backend_options: object,
) -> StrategyComparison:
    """Run the same open-loop load with one group slowed 4x under each routing strategy.

    On the local twin each strategy is a restart of the twin with that gateway strategy
    (``get_backend(target, strategy=...)``); the slow fault is injected before the load and
    the twin is stopped at the end. On EKS the gateway's own balancing is the only strategy.
    """
    if not 0 < duration_s <= 60:
        raise ConfigError(f"duration_s={duration_s}: give 0 < duration_s <= 60")
    chosen = list(strategies) if lab_target(target) == "local" else ["gateway"]
    loads: dict[str, LoadTestResult] = {}
    slow = slow_group or ""
    for strategy in chosen:
        backend = lab_backend(target, strategy=strategy, **backend_options)
        try:
            backend.apply()
            if not slow:
                pods = backend.groups()
                slow = str(sorted(pods[pods["role"] == "leader"]["group"])[0])
            fail = getattr(backend, "fail", None)
            if fail is not None:
                fail(group=slow, mode="slow")
            ends = backend.endpoints()
            schedule = open_loop(
                rate_rps,
                arrival="poisson",
                duration_s=duration_s,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                seed=seed,
            )
            loads[strategy] = run_load(
                schedule, ends.gateway_url, ends.model, headers=ends.headers, timeout_s=60
            )
        finally:
            restore = getattr(backend, "restore", None)
            if restore is not None and slow:
                restore(group=slow)
            down = getattr(backend, "down", None)
            if down is not None:
                down()
    return StrategyComparison(slow, loads)


def check_strategies(
    comparison: StrategyComparison, *, baseline: str = "weighted", better: float = 0.9
) -> pd.DataFrame:
    """Raise unless every load-aware strategy beats the static split on the slow group.

    Holds when each other strategy sent a smaller share of requests to the slow group than
    ``baseline`` and its TTFT p99 is below ``better`` x the baseline's; no request may fail
    (a slow group is not a failure).
    """
    frame = comparison.to_frame()
    rows = {str(r["strategy"]): r for r in frame.to_dict("records")}
    problems = [f"{s}: {r['errors']} errors" for s, r in rows.items() if r["errors"]]
    if baseline in rows:
        base = float(rows[baseline]["ttft_p99_ms"])
        for strategy, row in rows.items():
            p99 = float(row["ttft_p99_ms"])
            share, base_share = row["share_on_slow_group"], rows[baseline]["share_on_slow_group"]
            if strategy != baseline and not share < base_share:
                problems.append(
                    f"{strategy}: {share:.1%} of requests on the slow group, not fewer than "
                    f"{baseline}'s {base_share:.1%}"
                )
            if strategy != baseline and not p99 < better * base:
                problems.append(
                    f"{strategy}: TTFT p99 {p99:.0f} ms is not below "
                    f"{better:.0%} of {baseline}'s {base:.0f} ms"
                )
    if problems:
        raise ValidationError(f"routing under skew: {problems[0]}", problems)
    return frame


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
