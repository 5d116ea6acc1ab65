"""Drill and routing logic without processes: predictions, phases, checks, figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from labutils import drills, figures
from labutils.errors import ConfigError, ValidationError
from labutils.lessons import n02_routing as routing
from labutils.loadtest import LoadTestResult, RequestRecord, open_loop


def _load(rows: list[tuple[float, float, str, str]], duration_s: float = 6.0) -> LoadTestResult:
    """Records (sent_s, end_s, outcome, group) as the sender writes them."""
    records = []
    for i, (sent, end, outcome, group) in enumerate(rows):
        ok = outcome == "ok"
        records.append(RequestRecord(index=i, scheduled_s=sent, sent_s=sent, end_s=end,
                                     first_token_s=sent + 0.1 if ok else math.nan,
                                     chunk_times_s=[sent + 0.1] if ok else [], outcome=outcome,
                                     status=200 if ok else 503, output_tokens=1 if ok else None,
                                     zone=group.rsplit("-", 1)[0].removeprefix("vllm-"),
                                     group=group))  # fmt: skip
    schedule = open_loop(len(rows) / duration_s, requests=len(rows), duration_s=duration_s,
                         input_tokens=8, output_tokens=1)  # fmt: skip
    return LoadTestResult(schedule, records, "http://127.0.0.1:1", "m", True, 0.0, duration_s)


HEALTH = drills.HealthSettings("us-west-2a", 10.0, 2, 3, time_scale=0.1)
A0, B0 = "vllm-us-west-2a-0", "vllm-us-west-2b-0"


def _states(*rows: tuple[float, str, str]) -> list[drills.ServerState]:
    return [drills.ServerState(t, "zone_us-west-2a", server, status) for t, server, status in rows]


def test_health_prediction_scales_with_time_scale() -> None:
    assert HEALTH.effective_interval_s == pytest.approx(1.0)
    assert HEALTH.predicted_detect_s == pytest.approx(3.0)  # 1 s x (2 + 1)
    assert HEALTH.predicted_rise_s == pytest.approx(4.0)
    slow = drills.HealthSettings("z", 10.0, 3, 3)
    assert slow.predicted_detect_s == pytest.approx(40.0)


def _result(rows: list[tuple[float, float, str, str]], states: list[drills.ServerState],
            drill: str = "zone-kill") -> drills.DrillResult:  # fmt: skip
    result = drills.DrillResult(drill=drill, target="us-west-2a", groups=(A0,),
                                strategy="weighted", load=_load(rows), health=HEALTH,
                                fault_s=1.0, states=states)  # fmt: skip
    result.detected_s = drills._first_time(states, (A0,), 1.0, "out")
    result.recovered_s = drills._first_time(states, (A0,), result.detected_s, "up")
    return result


def test_phases_and_detection_from_server_states() -> None:
    states = _states((0.0, A0, "UP"), (1.5, A0, "UP 1/2"), (2.5, A0, "DOWN"),
                     (4.0, A0, "DOWN 1/2"), (5.0, A0, "UP"))  # fmt: skip
    rows = [(0.5, 1.2, "connection_reset", A0), (0.6, 0.9, "ok", B0),
            (1.5, 1.6, "http_5xx", A0), (3.0, 3.4, "ok", B0), (5.5, 5.8, "ok", A0)]  # fmt: skip
    result = _result(rows, states)
    assert result.detect_s == pytest.approx(1.5)
    assert result.recovered_s == pytest.approx(5.0)
    frame = result.to_frame()
    assert list(frame["phase"]) == ["before", "before", "detecting", "after-detection",
                                    "after-recovery"]  # fmt: skip
    assert list(frame["in_flight_at_fault"]) == [True, False, False, False, False]
    summary = drills.check_drill(result).iloc[0]
    assert (summary["failed"], summary["failed_in_flight"]) == (2, 1)
    assert summary["failed_while_detecting"] == 1 and summary["failed_after_detection"] == 0


def test_maint_slots_do_not_block_recovery() -> None:
    other = "vllm-us-west-2a-1"
    states = _states((0.0, A0, "UP"), (0.0, other, "UP"), (2.0, A0, "DOWN"),
                     (2.0, other, "DOWN"), (3.0, other, "MAINT"), (4.0, A0, "UP"))  # fmt: skip
    assert drills._first_time(states, (A0, other), 1.0, "out") == pytest.approx(2.0)
    assert drills._first_time(states, (A0, other), 2.0, "up") == pytest.approx(4.0)


def test_check_drill_flags_late_failures_and_slow_detection() -> None:
    states = _states((0.0, A0, "UP"), (4.5, A0, "DOWN"))  # 3.5 s > 3 s predicted + 0.2 slack
    rows = [(0.2, 0.5, "ok", A0), (5.0, 5.1, "http_5xx", A0)]
    with pytest.raises(ValidationError) as info:
        drills.check_drill(_result(rows, states), slack_s=0.2)
    problems = " | ".join(info.value.problems)
    assert "after the health checks" in problems and "detection took 3.50 s" in problems


def test_unhealthy_drill_allows_no_failure() -> None:
    states = _states((0.0, A0, "UP"), (2.0, A0, "DOWN"))
    rows = [(0.2, 1.1, "connection_reset", A0), (2.5, 2.6, "ok", B0)]
    with pytest.raises(ValidationError, match="keeps answering"):
        drills.check_drill(_result(rows, states, drill="group-unhealthy"))


def test_timeline_plot_marks_the_events() -> None:
    states = _states((0.0, A0, "UP"), (2.0, A0, "DOWN"))
    result = _result([(0.2, 0.5, "ok", A0), (1.2, 1.3, "http_5xx", A0)], states)
    fig = figures.plot_timeline(result.to_frame(), result.marks, title="t")
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["fault 1.0s", "detected 2.0s"]
    with pytest.raises(ConfigError, match="sent_s"):
        figures.plot_timeline(result.to_frame().drop(columns=["sent_s"]))


def test_split_frame_and_conformance_check() -> None:
    rows = [(i * 0.01, i * 0.01 + 0.1, "ok", A0 if i % 10 < 7 else B0) for i in range(200)]
    split = routing.SplitResult(_load(rows), {"us-west-2a": 70, "us-west-2b": 30, "us-west-2c": 0})
    frame = routing.check_split(split)
    assert list(frame["requests"]) == [140, 60, 0]
    assert np.allclose(frame["deviation_pp"], [0.0, 0.0, 0.0])
    skewed = routing.SplitResult(_load(rows), {"us-west-2a": 50, "us-west-2b": 50})
    with pytest.raises(ValidationError, match=r"us-west-2a: 70\.0% measured vs 50\.0%"):
        routing.check_split(skewed)
    loose = routing.SplitResult(_load(rows), {"us-west-2a": 50, "us-west-2b": 50}, tolerance=0.25)
    assert list(routing.check_split(loose)["deviation_pp"]) == [20.0, -20.0]


def test_strategy_check_needs_less_traffic_on_the_slow_group() -> None:
    slow, fast = A0, B0
    weighted = _load([(i * 0.1, i * 0.1 + 0.1, "ok", slow if i % 2 else fast) for i in range(20)])
    leastconn = _load([(i * 0.1, i * 0.1 + 0.1, "ok", fast) for i in range(20)])
    for record in weighted.records:  # the slow group's first tokens come late
        if record.group == slow:
            record.first_token_s = record.sent_s + 2.0
    comparison = routing.StrategyComparison(
        slow, {"weighted": weighted, "least-request": leastconn}
    )
    frame = routing.check_strategies(comparison)
    assert list(frame["share_on_slow_group"]) == [0.5, 0.0]
    reversed_ = routing.StrategyComparison(slow, {"weighted": leastconn, "least-request": weighted})
    with pytest.raises(ValidationError, match="slow group"):
        routing.check_strategies(reversed_)
    # against the weight share, not the baseline's random draw: 0.25 by weight, 0.5 measured
    by_weight = routing.StrategyComparison(
        slow, {"weighted": leastconn, "least-request": weighted}, static_share=0.25
    )
    with pytest.raises(ValidationError, match=r"50\.0% .* not fewer than the 25\.0% a static"):
        routing.check_strategies(by_weight)
    assert list(by_weight.to_frame()["static_share"]) == [0.25, 0.25]
    assert isinstance(figures.plot_strategies(frame), Figure)


def test_strategy_check_holds_the_best_load_aware_p99_to_the_static_split() -> None:
    slow, fast = A0, B0

    def load(first_token_s: float, on_slow: int) -> LoadTestResult:
        rows = [(i * 0.1, i * 0.1 + 0.1, "ok", slow if i < on_slow else fast) for i in range(20)]
        result = _load(rows)
        for record in result.records:
            record.first_token_s = record.sent_s + (first_token_s if record.group == slow else 0.1)
        return result

    weighted = load(2.0, 10)
    # least-request no better in the tail (as at light load), queue-aware clearly better
    comparison = routing.StrategyComparison(
        slow,
        {"weighted": weighted, "least-request": load(2.5, 2), "queue-aware": load(0.5, 1)},
        static_share=0.25,
    )
    assert isinstance(routing.check_strategies(comparison), pd.DataFrame)
    no_better = routing.StrategyComparison(
        slow, {"weighted": weighted, "least-request": load(2.5, 2)}, static_share=0.25
    )
    with pytest.raises(ValidationError, match="best load-aware strategy least-request: TTFT p99"):
        routing.check_strategies(no_better)


def test_run_drill_rejects_unknown_or_unbounded_drills() -> None:
    with pytest.raises(ConfigError, match="choose one of: zone-kill"):
        drills.run_drill(None, "meteor")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="duration_s"):
        drills.run_drill(None, "zone-kill", duration_s=600)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="restore_at_s"):
        drills.run_drill(None, "zone-kill", fault_at_s=3, restore_at_s=2)  # type: ignore[arg-type]


def _strict(failed_after: int, after: int, share: float) -> drills.DrillResult:
    states = _states((0.0, A0, "UP"), (1.5, A0, "DOWN"))
    rows = [(0.2, 0.3, "ok", B0)]
    rows += [(2.0 + i * 0.05, 2.1 + i * 0.05, "http_5xx" if i < failed_after else "ok",
              A0 if i < failed_after else B0) for i in range(after)]  # fmt: skip
    result = _result(rows, states)
    result.target_share = share
    return result


def test_no_failover_check_uses_the_binomial_chance_of_so_few_failures() -> None:
    # 30 requests after detection on a 1/3 split: 10 expected. 4 failures happen by chance
    # 1.2 % of the time (a "half the expected" rule would fail then); 1 failure: 8e-5.
    frame = drills.check_no_failover(_strict(4, 30, 1 / 3))
    assert frame.iloc[0]["failed_after_detection"] == 4
    with pytest.raises(ValidationError, match=r"only 1 of 30 .* probability 8\.\de-05"):
        drills.check_no_failover(_strict(1, 30, 1 / 3))
    with pytest.raises(ValidationError, match="only 0 of 30"):
        drills.check_no_failover(_strict(0, 30, 1 / 3))
    with pytest.raises(ValidationError, match="only 12 requests sent after detection, too few"):
        drills.check_no_failover(_strict(0, 12, 1 / 3))
    assert drills._binomial_cdf(4, 30, 1 / 3) == pytest.approx(0.01223, abs=1e-5)


def test_checks_say_when_a_target_cannot_be_checked() -> None:
    # a cluster's gateway: no load-balancer states, so no detection to check against
    blind = _result([(0.2, 0.5, "ok", A0), (1.2, 1.3, "http_5xx", A0)], states=[])
    blind.detection_source = "not observable on this backend (no load-balancer state)"
    row = drills.check_drill(blind).iloc[0]
    assert row["detection_source"].startswith("not observable")
    assert drills.check_no_failover(blind).startswith("not checkable")  # type: ignore[union-attr]
    only = routing.StrategyComparison(A0, {"gateway": _load([(0.1, 0.2, "ok", B0)])})
    assert str(routing.check_strategies(only)).startswith("not checkable: only gateway ran")


def _zone_alerts(zone: str, active_at_s: float, state: str = "firing") -> pd.DataFrame:
    """Rows as labutils.metrics.prometheus.alerts() returns them."""
    row = {"alertname": routing.ZONE_ALERT, "state": state, "active_at_s": active_at_s,
           "value": 2.0, "summary": "s", "namespace": "vllm-lab", "severity": "critical",
           "zone": zone}  # fmt: skip
    return pd.DataFrame([row])


TIMING = routing.AlertTiming(routing.ZONE_ALERT, "q", for_s=6.0, evaluation_interval_s=3.0,
                             scrape_interval_s=1.5)  # fmt: skip


def test_alert_timing_adds_scrape_evaluations_and_for() -> None:
    assert TIMING.fires_within_s == 13.5
    frame = TIMING.to_frame()
    assert list(frame["seconds"]) == [1.5, 3.0, 6.0, 3.0, 13.5]


def test_zone_alert_check_on_the_twin() -> None:
    killed = 1000.0
    firing = _zone_alerts("us-west-2a", killed + 2.6)
    ok = routing.check_zone_alert(firing, firing, zone="us-west-2a", killed_at_s=killed,
                                  seen_at_s=killed + 9.1, timing=TIMING)  # fmt: skip
    assert ok.startswith("OK: VllmZoneNoReadyLeader{zone=us-west-2a} pending 2.6 s")
    with pytest.raises(ValidationError, match="not firing"):
        routing.check_zone_alert(_zone_alerts("us-west-2a", killed + 2.6, "pending"), firing,
                                 zone="us-west-2a", killed_at_s=killed, seen_at_s=killed + 9.1,
                                 timing=TIMING)  # fmt: skip
    both = pd.concat([firing, _zone_alerts("us-west-2b", killed + 2.6)], ignore_index=True)
    with pytest.raises(ValidationError, match=r"zones still serving: \['us-west-2b'\]"):
        routing.check_zone_alert(firing, both, zone="us-west-2a", killed_at_s=killed,
                                 seen_at_s=killed + 9.1, timing=TIMING)  # fmt: skip
    with pytest.raises(ValidationError, match="less than its for: 6 s"):
        routing.check_zone_alert(firing, firing, zone="us-west-2a", killed_at_s=killed,
                                 seen_at_s=killed + 4.0, timing=TIMING)  # fmt: skip
    with pytest.raises(ValidationError, match=r"later than the 13\.5 s bound"):
        routing.check_zone_alert(_zone_alerts("us-west-2a", killed + 20), firing,
                                 zone="us-west-2a", killed_at_s=killed, seen_at_s=killed + 30,
                                 timing=TIMING)  # fmt: skip
    stale = _zone_alerts("us-west-2a", killed - 10)  # left by an earlier fault
    with pytest.raises(ValidationError, match="before the kill"):
        routing.check_zone_alert(stale, stale, zone="us-west-2a", killed_at_s=killed,
                                 seen_at_s=killed + 0.1, timing=TIMING)  # fmt: skip


def test_zone_alert_timing_is_reported_not_checked_on_eks() -> None:
    killed = 1000.0
    late = _zone_alerts("us-west-2a", killed + 60)  # the pods drained first
    message = routing.check_zone_alert(late, late, zone="us-west-2a", killed_at_s=killed,
                                       seen_at_s=killed + 125, timing=TIMING,
                                       target="eks")  # fmt: skip
    assert message.startswith("OK:") and "timing not checked on eks" in message
