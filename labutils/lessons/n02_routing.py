"""Load balancing lessons: the HTTPRoute's weighted split measured per zone, weight changes,
routing strategies compared under skewed load (a slow group), and the zone alert a zone loss
fires (timed from what Prometheus reports about its own rule and scrapes).

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

from labutils.config import default_state_dir, lab_target, load_config
from labutils.drills import running_manifests
from labutils.errors import ConfigError, MetricsError, ValidationError
from labutils.loadtest import LoadTestResult, open_loop, run_load
from labutils.manifests.variants import render_variant
from labutils.metrics import prometheus as prom
from labutils.protocol import Backend
from labutils.targets import fault_injector, get_backend

__all__ = [
    "CONFORMANCE_ATTEMPTS",
    "CONFORMANCE_REQUESTS",
    "CONFORMANCE_TOLERANCE",
    "ZONE_ALERT",
    "AlertTiming",
    "SplitResult",
    "StrategyComparison",
    "alert_timing",
    "check_split",
    "check_strategies",
    "check_zone_alert",
    "compare_strategies",
    "lab_backend",
    "measure_split",
    "set_route_weights",
]

# Gateway API conformance: 5 percentage points per backend over 500 requests, and a run passes
# when any of 10 such attempts does (kubernetes-semantics reference; the retry loop is in
# gateway-api conformance/tests/httproute-weight.go): each request is drawn independently, so
# one fair attempt misses 5 points by chance a few percent of the time.
CONFORMANCE_TOLERANCE = 0.05
CONFORMANCE_REQUESTS = 500
CONFORMANCE_ATTEMPTS = 10


@dataclass
class SplitResult:
    """Requests per zone through the gateway against the route's weights.

    Attributes:
        load: the attempt this result reports: the first within tolerance, else the last.
        weights: zone -> HTTPRoute weight, read from the running backend.
        attempt: which attempt ``load`` is (1-based).
        tolerance: the allowed deviation per zone, as a fraction.
        missed: per-zone frames of the earlier attempts that were out of tolerance.
    """

    load: LoadTestResult
    weights: dict[str, int]
    attempt: int = 1
    tolerance: float = CONFORMANCE_TOLERANCE
    missed: list[pd.DataFrame] = dataclasses.field(default_factory=list)

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
                    "attempt": self.attempt,
                }
            )
        return pd.DataFrame(rows)


def _split_problems(split: SplitResult) -> list[str]:
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
        elif not abs(float(row["deviation_pp"])) <= split.tolerance * 100:
            problems.append(
                f"zone {row['zone']}: {row['measured_share']:.1%} measured vs "
                f"{row['expected_share']:.1%} by weight (> {split.tolerance:.0%})"
            )
    return problems


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
    requests: int = CONFORMANCE_REQUESTS,
    rate_rps: float = 200.0,
    attempts: int = CONFORMANCE_ATTEMPTS,
    tolerance: float = CONFORMANCE_TOLERANCE,
    output_tokens: int = 1,
    seed: int = 0,
) -> SplitResult:
    """Send ``requests`` short requests (Poisson, ``rate_rps``) through the gateway; count zones.

    The split is random per request, so one attempt's share carries sampling noise of
    ``sqrt(p (1 - p) / n)`` (2.1 points at 500 requests): a fair gateway misses a 5-point
    tolerance in a few percent of attempts. As the Gateway API conformance test does, another
    attempt (fresh requests, next seed) follows a miss, up to ``attempts``; a biased gateway
    misses every one. Failed requests end the measurement at once: they are not noise.

    Args:
        backend: the running lab (twin or cluster).
        requests: requests per attempt (1..5000).
        rate_rps: open-loop arrival rate.
        attempts: the most attempts (1..20).
        tolerance: allowed deviation of each zone's share, as a fraction (0..1).
        output_tokens: tokens each request asks for.
        seed: the first attempt's schedule seed (attempt ``k`` uses ``seed + k - 1``).

    Returns:
        The first attempt within tolerance, else the last, with the missed ones in ``missed``.
    """
    if not 0 < requests <= 5000:
        raise ConfigError(f"requests={requests}: give 1..5000")
    if not 1 <= attempts <= 20:
        raise ConfigError(f"attempts={attempts}: give 1..20")
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance={tolerance}: give a fraction in (0, 1), e.g. 0.05")
    weights = _weights(backend)
    ends = backend.endpoints()
    missed: list[pd.DataFrame] = []
    for attempt in range(1, attempts + 1):
        schedule = open_loop(
            rate_rps,
            arrival="poisson",
            requests=requests,
            input_tokens=16,
            output_tokens=output_tokens,
            seed=seed + attempt - 1,
        )
        load = run_load(schedule, ends.gateway_url, ends.model, headers=ends.headers, timeout_s=60)
        split = SplitResult(load, weights, attempt, tolerance, list(missed))
        if any(r.outcome != "ok" for r in load.records) or not _split_problems(split):
            return split
        missed.append(split.to_frame())
    return split


def check_split(split: SplitResult) -> pd.DataFrame:
    """Raise unless every zone's measured share is within the split's tolerance of its weight.

    Also requires every request to have succeeded and weight-0 zones to get nothing.

    Returns:
        :meth:`SplitResult.to_frame` of the passing attempt.
    """
    problems = _split_problems(split)
    if problems:
        tried = f" (attempt {split.attempt}; every earlier one missed too)" if split.missed else ""
        raise ValidationError(f"weighted split: {problems[0]}{tried}", problems)
    return split.to_frame()


def set_route_weights(backend: Backend, weights: Mapping[str, int]) -> pd.DataFrame:
    """Re-render the manifests with new HTTPRoute ``route_weights`` and apply them.

    The twin applies weight changes live (HAProxy reloads hitlessly); on EKS this is a
    server-side apply of the changed HTTPRoute. Returns the backend's status.
    """
    # The twin applies a change live only from the folder it runs (another folder restarts it).
    out = (
        running_manifests(backend)
        if fault_injector(backend) is not None
        else default_state_dir() / "rendered-route-weights"
    )
    render_variant(out, route_weights=weights)
    return backend.apply(out)


# --- routing strategies under skew ----------------------------------------------------------
@dataclass
class StrategyComparison:
    """The same skewed load (one slow group) through each routing strategy."""

    slow_group: str
    loads: dict[str, LoadTestResult]
    # the slow group's share under the static split, by weight: its zone's weight share over
    # the zone's group count (HAProxy round-robins within a zone)
    static_share: float = math.nan

    def to_frame(self) -> pd.DataFrame:
        """One row per strategy: requests, errors, TTFT p50/p99 (ms), share on the slow group,
        and the share a static split gives it by weight (``static_share``)."""
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
                    "static_share": round(self.static_share, 3),
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
    static_share = math.nan
    for strategy in chosen:
        backend = lab_backend(target, strategy=strategy, **backend_options)
        try:
            backend.apply()
            if not slow or math.isnan(static_share):  # the first strategy's deployment
                pods = backend.groups()
                leaders = pods[pods["role"] == "leader"]
                slow = slow or str(sorted(leaders["group"])[0])
                static_share = _static_share(backend, leaders, slow)
            injector = fault_injector(backend)
            if injector is not None:
                injector.fail(group=slow, mode="slow")
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
            injector = fault_injector(backend)
            if injector is not None:
                if slow:
                    injector.restore(group=slow)
                injector.down()
    return StrategyComparison(slow, loads, static_share)


def _static_share(backend: Backend, leaders: pd.DataFrame, group: str) -> float:
    weights = _weights(backend)
    zone = leaders.loc[leaders["group"] == group, "zone"]
    total = sum(weights.values())
    if zone.empty or not total:
        return math.nan
    in_zone = int((leaders["zone"] == zone.iloc[0]).sum())
    return weights.get(str(zone.iloc[0]), 0) / total / max(1, in_zone)


def check_strategies(
    comparison: StrategyComparison, *, baseline: str = "weighted", better: float = 1.0
) -> pd.DataFrame | str:
    """Raise unless the load-aware strategies beat the static split on the slow group.

    Holds when each other strategy sent a smaller share of requests to the slow group than
    the static split gives it by weight (``static_share``; the baseline's *measured* share is
    a random draw of a few dozen requests, so it is shown, not compared against), the best of
    them has a TTFT p99 below ``better`` x the baseline's, and no request failed (a slow group
    is not a failure). Only the best is held to the p99: at the notebook's ~20 req/s the
    groups' in-flight counts barely differ, so ``leastconn`` often cannot tell the slow group
    apart and least-request's p99 (nearly one request out of ~80) landed at 78 %, 93 % and
    above 100 % of the static split's in three runs, while queue-aware, which reads each
    engine's queue, stayed below it.

    Returns:
        The comparison frame, or ``"not checkable ..."`` when only one strategy ran (on EKS the
        gateway's own balancing is the only one: there is nothing to compare).
    """
    frame = comparison.to_frame()
    rows = {str(r["strategy"]): r for r in frame.to_dict("records")}
    if baseline not in rows or len(rows) < 2:
        return (
            f"not checkable: only {', '.join(rows) or 'no strategy'} ran (the twin's gateway "
            "strategies are compared on the local target only)"
        )
    problems = [f"{s}: {r['errors']} errors" for s, r in rows.items() if r["errors"]]
    base = float(rows[baseline]["ttft_p99_ms"])
    static = comparison.static_share
    if math.isnan(static):
        static = float(rows[baseline]["share_on_slow_group"])
    others = {s: r for s, r in rows.items() if s != baseline}
    for strategy, row in others.items():
        share = row["share_on_slow_group"]
        if not share < static:
            problems.append(
                f"{strategy}: {share:.1%} of requests on the slow group, not fewer than "
                f"the {static:.1%} a static split gives it by weight"
            )
    best = min(others, key=lambda s: float(others[s]["ttft_p99_ms"]))
    p99 = float(others[best]["ttft_p99_ms"])
    if not p99 < better * base:
        problems.append(
            f"best load-aware strategy {best}: TTFT p99 {p99:.0f} ms is not below "
            f"{better:.0%} of {baseline}'s {base:.0f} ms"
        )
    if problems:
        raise ValidationError(f"routing under skew: {problems[0]}", problems)
    return frame


# --- the zone alert ------------------------------------------------------------------------
# The lab's alerting rule for a zone without a leader answering (labutils/data/monitoring/
# prometheusrule.yaml; on the twin its `for:` is scaled by the time scale).
ZONE_ALERT = "VllmZoneNoReadyLeader"


@dataclass(frozen=True)
class AlertTiming:
    """When an alert on a scraped condition can fire, from Prometheus's own settings.

    A killed leader's next scrape fails (``up`` 0) within one scrape interval; the next rule
    evaluation (every group interval) sees the condition and makes the alert *pending*; it
    *fires* at the first evaluation at least ``for:`` after that.
    """

    alert: str
    query: str
    for_s: float  # as loaded (the twin multiplies the rule's `for:` by its time scale)
    evaluation_interval_s: float
    scrape_interval_s: float

    @property
    def fires_within_s(self) -> float:
        """Upper bound from the leaders' last answer to the alert firing."""
        return self.scrape_interval_s + 2 * self.evaluation_interval_s + self.for_s

    def to_frame(self) -> pd.DataFrame:
        """The terms of :attr:`fires_within_s`, one row each."""
        return pd.DataFrame(
            [
                ("scrape interval: the dead leaders' next scrape fails", self.scrape_interval_s),
                ("evaluation interval: the rule sees it (pending)", self.evaluation_interval_s),
                ("for: pending this long", self.for_s),
                ("evaluation interval: the rule fires", self.evaluation_interval_s),
                ("at most, in all", self.fires_within_s),
            ],
            columns=["step", "seconds"],
        )


def alert_timing(backend: Backend, alert: str = ZONE_ALERT) -> AlertTiming:
    """The alert's ``for:`` and evaluation interval and the leaders' scrape interval, as loaded.

    Raises:
        MetricsError: Prometheus has no such alerting rule, or scrapes no leader.
    """
    rules = prom.rules(backend)
    rule = rules[(rules["name"] == alert) & (rules["type"] == "alerting")]
    if rule.empty:
        raise MetricsError(
            f"Prometheus at {prom.prometheus_api(backend).url} has no alerting rule {alert}; "
            "install the lab's PrometheusRule (labctl instructor addons)"
        )
    targets = prom.targets(backend)
    leaders = targets[targets["job"].str.endswith("/vllm")]
    if leaders.empty:
        raise MetricsError(f"Prometheus scrapes no leader (no target of job */vllm): {alert}")
    first = rule.iloc[0]
    return AlertTiming(
        alert=alert,
        query=str(first["query"]),
        for_s=float(first["for_s"]),
        evaluation_interval_s=float(first["interval_s"]),
        scrape_interval_s=float(leaders["scrape_interval_s"].max()),
    )


def check_zone_alert(
    firing: pd.DataFrame,
    alerts_now: pd.DataFrame,
    *,
    zone: str,
    killed_at_s: float,
    seen_at_s: float,
    timing: AlertTiming,
    target: str = "local",
    slack_s: float = 5.0,
) -> str:
    """The zone alert fired for the killed zone only, after being pending for its ``for:``.

    On the twin it must also have fired within :attr:`AlertTiming.fires_within_s` of the kill
    (+ ``slack_s`` for a busy machine and the polling). On ``eks`` the kill is a scale to 0 whose
    pods first drain (preStop, graceful shutdown), so the timing is reported, not checked.

    Raises:
        ValidationError: naming what did not hold.
    """
    mine = firing[(firing["alertname"] == timing.alert) & (firing["state"] == "firing")]
    if "zone" in mine:
        mine = mine[mine["zone"] == zone]
    if mine.empty:
        raise ValidationError(f"{timing.alert}{{zone={zone}}} is not firing")
    others = alerts_now[alerts_now["alertname"] == timing.alert]
    wrong = sorted(set(others.get("zone", pd.Series(dtype=str)).dropna()) - {zone})
    if wrong:
        raise ValidationError(f"{timing.alert} also fired for zones still serving: {wrong}")
    active_s = float(mine["active_at_s"].min())
    if lab_target(target) == "local" and active_s < killed_at_s - 1.0:
        raise ValidationError(
            f"{timing.alert}{{zone={zone}}} was active {killed_at_s - active_s:.1f} s before the "
            "kill: an earlier fault's alert (wait for it to resolve first: wait_for_no_alert)"
        )
    pending_s = seen_at_s - active_s
    if pending_s < timing.for_s - 0.5:
        raise ValidationError(
            f"{timing.alert} firing after {pending_s:.1f} s pending, less than its for: "
            f"{timing.for_s:g} s"
        )
    fired_after_s = seen_at_s - killed_at_s
    summary = (
        f"{timing.alert}{{zone={zone}}} pending {active_s - killed_at_s:.1f} s after the kill, "
        f"seen firing after {fired_after_s:.1f} s (for: {timing.for_s:g} s"
    )
    if lab_target(target) != "local":
        return f"OK: {summary}; timing not checked on {target}: the pods drain first)"
    bound_s = timing.fires_within_s + slack_s
    if fired_after_s > bound_s:
        raise ValidationError(
            f"{summary}): later than the {timing.fires_within_s:g} s bound (+{slack_s:g} s)"
        )
    return f"OK: {summary}; at most {timing.fires_within_s:g} s)"
