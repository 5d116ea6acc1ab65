"""The autoscaling/v2 algorithm against the Kubernetes docs' worked examples and cases derived
from pkg/controller/podautoscaler (replica_calculator.go, horizontal.go)."""

from __future__ import annotations

import math

import pytest

from labutils.errors import ConfigError
from labutils.kube.hpa import (
    Autoscaler,
    Behavior,
    HpaSpec,
    MetricSpec,
    PodSample,
    ScalingPolicy,
    ScalingRules,
    combine_proposals,
    hpa_spec_from_manifest,
    replicas_for_metric,
    scale_down_limit,
    scale_up_limit,
)

WAITING = MetricSpec("Pods", "vllm_waiting", "AverageValue", 0.1)  # target 100m


def pods(*values: float | None, **kw: object) -> list[PodSample]:
    return [PodSample(f"p{i}", v, **kw) for i, v in enumerate(values)]  # type: ignore[arg-type]


# --- docs: "Algorithm details" ------------------------------------------------------------


def test_docs_ratio_doubles_and_halves() -> None:
    # current 200m vs desired 100m doubles; 50m halves.
    assert replicas_for_metric(2, pods(0.2, 0.2), WAITING).replicas == 4
    assert replicas_for_metric(4, pods(0.05, 0.05, 0.05, 0.05), WAITING).replicas == 2


def test_within_tolerance_keeps_replicas() -> None:
    near = replicas_for_metric(3, pods(0.105, 0.105, 0.105), WAITING)
    assert near.replicas == 3 and near.reason == "within tolerance"
    # 0.115/0.1 = 1.15 is outside 10 %: ceil(1.15 x 3) = 4
    assert replicas_for_metric(3, pods(0.115, 0.115, 0.115), WAITING).replicas == 4
    # a wider tolerance absorbs it
    assert replicas_for_metric(3, pods(0.115, 0.115, 0.115), WAITING, tolerance=0.2).replicas == 3


def test_average_is_truncated_in_milli_units() -> None:
    # 3 pods with 1m, 1m, 2m -> total 4m / 3 = 1m (integer division), ratio 1/1 = 1
    spec = MetricSpec("Pods", "m", "AverageValue", 0.001)
    result = replicas_for_metric(3, pods(0.001, 0.001, 0.002), spec)
    assert result.usage == pytest.approx(0.001) and result.replicas == 3


def test_utilization_truncates_to_whole_percent() -> None:
    cpu = MetricSpec("Resource", "cpu", "Utilization", 50)
    samples = [PodSample("a", 0.26, request=0.5), PodSample("b", 0.26, request=0.5)]
    result = replicas_for_metric(2, samples, cpu)
    assert result.usage == 52.0  # 0.52 / 1.0 -> 52 %
    assert result.replicas == 2  # 52/50 = 1.04 within tolerance
    hot = [PodSample("a", 0.5, request=0.5), PodSample("b", 0.5, request=0.5)]
    assert replicas_for_metric(2, hot, cpu).replicas == 4


# --- missing / unready / ignored pods (calcPlainMetricReplicas) ---------------------------


def test_missing_pods_count_as_target_on_scale_down() -> None:
    # ready 50m x3, one missing -> filled with 100m: (150+100)/4 = 62m -> ceil(0.625*4) = 3
    result = replicas_for_metric(4, pods(0.05, 0.05, 0.05, None), WAITING)
    assert result.missing_pods == 1
    assert result.replicas == 3
    # without the missing pod the plain ratio would give ceil(0.5 * 3) = 2
    assert replicas_for_metric(3, pods(0.05, 0.05, 0.05), WAITING).replicas == 2


def test_missing_pods_count_as_zero_on_scale_up() -> None:
    # ready 200m x3, one missing -> 0: 600/4 = 150m -> ceil(1.5*4) = 6 (not ceil(2*3)=6+)
    result = replicas_for_metric(4, pods(0.2, 0.2, 0.2, None), WAITING)
    assert result.replicas == 6
    assert replicas_for_metric(3, pods(0.3, 0.3, 0.3), WAITING).replicas == 9


def test_pending_pods_count_as_zero_and_can_cancel_scale_up() -> None:
    samples = [PodSample("a", 0.15), PodSample("b", None, phase="Pending")]
    samples.append(PodSample("c", None, phase="Pending"))
    # ready ratio 1.5 -> up, but refilled (150+0+0)/3 = 50m -> ratio 0.5 reverses: stay at 3
    result = replicas_for_metric(3, samples, WAITING)
    assert result.unready_pods == 2 and result.replicas == 3
    assert "reversed" in result.reason


def test_failed_and_deleting_pods_are_ignored() -> None:
    samples = [
        *pods(0.2, 0.2),
        PodSample("gone", 0.0, phase="Failed"),
        PodSample("bye", 0.0, deleting=True),
    ]
    result = replicas_for_metric(4, samples, WAITING)
    assert result.ignored_pods == 2
    assert result.replicas == 4  # ceil(2 x 2 ready)


def test_not_ready_counts_only_for_cpu() -> None:
    cpu = MetricSpec("Resource", "cpu", "Utilization", 50)
    samples = [PodSample("a", 1.0, request=1.0), PodSample("b", 1.0, request=1.0, ready=False)]
    assert replicas_for_metric(2, samples, cpu).unready_pods == 1
    custom = [PodSample("a", 0.2), PodSample("b", 0.2, ready=False)]
    assert replicas_for_metric(2, custom, WAITING).ready_pods == 2


def test_no_metrics_is_an_error_not_zero() -> None:
    result = replicas_for_metric(2, pods(None, None), WAITING)
    assert result.error is not None and math.isnan(result.usage)
    assert result.replicas == 2


# --- several metrics ---------------------------------------------------------------------


def test_largest_metric_wins_and_missing_metric_blocks_scale_down() -> None:
    kv = MetricSpec("Pods", "kv", "AverageValue", 0.5)
    a = replicas_for_metric(4, pods(0.05, 0.05, 0.05, 0.05), WAITING)  # -> 2
    b = replicas_for_metric(4, pods(0.6, 0.6, 0.6, 0.6), kv)  # -> ceil(1.2*4) = 5
    assert combine_proposals(4, [a, b])[0] == 5
    broken = replicas_for_metric(4, pods(None), kv)
    replicas, reason = combine_proposals(4, [a, broken])
    assert replicas is None and "not scaling down" in reason
    up = replicas_for_metric(4, pods(0.2, 0.2, 0.2, 0.2), WAITING)
    assert combine_proposals(4, [up, broken])[0] == 8


# --- behavior: rate limits ---------------------------------------------------------------


def test_docs_scale_down_policies_pods_and_percent() -> None:
    # docs "Scaling policies": Pods 4 / 60 s and Percent 10 / 60 s; with 80 replicas the
    # first step removes 8; below 40 replicas the Pods policy (4) allows more.
    rules = ScalingRules(0, "Max", (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)))
    assert scale_down_limit(80, rules, [], [], now_s=0) == 72
    assert scale_down_limit(72, rules, [], [], now_s=100) == 64  # trunc(64.8)
    assert scale_down_limit(30, rules, [], [], now_s=0) == 26
    # within the period, the count at its start (80) is the base: no further change allowed
    assert scale_down_limit(72, rules, [], [(0.0, 8)], now_s=30) == 72
    # Min picks the smallest change
    min_rules = ScalingRules(0, "Min", rules.policies)
    assert scale_down_limit(80, min_rules, [], [], now_s=0) == 76
    assert scale_down_limit(80, ScalingRules(0, "Disabled", rules.policies), [], [], 0) == 80


def test_scale_up_percent_rounds_up_and_default_policies() -> None:
    rules = ScalingRules(0, "Max", (ScalingPolicy("Percent", 50, 60),))
    assert scale_up_limit(1, rules, [], [], 0) == 2  # ceil(1.5)
    default = Behavior().scale_up  # 4 pods or 100 % per 15 s, Max
    assert scale_up_limit(2, default, [], [], 0) == 6
    assert scale_up_limit(10, default, [], [], 0) == 20
    # 3 were added 5 s ago: the period started at 7 -> max(7+4, 14)
    assert scale_up_limit(10, default, [(95.0, 3)], [], 100) == 14


def _spec(behavior: Behavior | None, min_r: int = 1, max_r: int = 10) -> HpaSpec:
    return HpaSpec("h", "LeaderWorkerSet", "vllm", min_r, max_r, (WAITING,), behavior)


def _at(value: float, n: int) -> dict[str, list[PodSample]]:
    return {WAITING.name: pods(*([value] * n))}


def test_without_behavior_scale_up_limited_to_double_or_four() -> None:
    hpa = Autoscaler(_spec(None, max_r=50))
    decision = hpa.sync(0, 1, _at(1.0, 1))  # metric asks 10
    assert decision.metric_replicas == 10 and decision.desired_replicas == 4
    assert decision.limit_reason == "ScaleUpLimit"
    assert hpa.sync(15, 5, _at(1.0, 5)).desired_replicas == 10  # 2 x 5


def test_without_behavior_downscale_stabilization_window() -> None:
    hpa = Autoscaler(_spec(None), downscale_stabilization_s=300)
    assert hpa.sync(0, 4, _at(0.1, 4)).desired_replicas == 4
    low = hpa.sync(15, 4, _at(0.02, 4))  # asks 1, but 4 was recommended 15 s ago
    assert low.metric_replicas == 1 and low.desired_replicas == 4
    assert low.limit_reason == "ScaleDownStabilized"
    assert hpa.sync(200, 4, _at(0.02, 4)).desired_replicas == 4
    assert hpa.sync(301, 4, _at(0.02, 4)).desired_replicas == 1


def test_min_max_clamps() -> None:
    hpa = Autoscaler(_spec(None, min_r=2, max_r=3))
    assert hpa.sync(0, 2, _at(1.0, 2)).desired_replicas == 3
    hpa = Autoscaler(_spec(None, min_r=2, max_r=3), downscale_stabilization_s=0)
    assert hpa.sync(0, 3, _at(0.0, 3)).desired_replicas == 2
    # outside the bounds the controller moves there before looking at metrics
    out = Autoscaler(_spec(None, min_r=2, max_r=3)).sync(0, 6, {})
    assert out.desired_replicas == 3 and "maxReplicas" in out.reason
    # spec.replicas 0 disables autoscaling
    assert Autoscaler(_spec(None)).sync(0, 0, {}, spec_replicas=0).desired_replicas == 0


def test_behavior_scale_up_window_takes_minimum_recent_recommendation() -> None:
    up = ScalingRules(60, "Max", (ScalingPolicy("Pods", 100, 15),))
    down = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15),))
    hpa = Autoscaler(_spec(Behavior(up, down), max_r=20))
    assert hpa.sync(0, 2, _at(0.1, 2)).desired_replicas == 2  # recommends 2
    spike = hpa.sync(15, 2, _at(0.5, 2))  # asks 10 but 2 was recommended within 60 s
    assert spike.metric_replicas == 10 and spike.desired_replicas == 2
    assert hpa.sync(61, 2, _at(0.5, 2)).desired_replicas == 10  # only 10s in the window now


def test_behavior_rate_limit_uses_recorded_scale_events() -> None:
    up = ScalingRules(0, "Max", (ScalingPolicy("Pods", 1, 60),))
    hpa = Autoscaler(_spec(Behavior(up, Behavior().scale_down), max_r=20))
    first = hpa.sync(0, 2, _at(0.5, 2))
    assert first.desired_replicas == 3 and first.limit_reason == "ScaleUpLimit"
    # the +1 of 10 s ago uses up the policy's period
    assert hpa.sync(10, 3, _at(0.5, 3)).desired_replicas == 3
    assert hpa.sync(61, 3, _at(0.5, 3)).desired_replicas == 4
    assert hpa.scale_up_events == [(61, 1)]  # the event older than every period is pruned


def test_behavior_default_scale_down_window_is_controller_default() -> None:
    behavior = Behavior()
    assert behavior.scale_down.stabilization_window_s is None
    hpa = Autoscaler(_spec(behavior), downscale_stabilization_s=30)
    hpa.sync(0, 4, _at(0.1, 4))
    assert hpa.sync(10, 4, _at(0.01, 4)).desired_replicas == 4
    assert hpa.sync(31, 4, _at(0.01, 4)).desired_replicas == 1


def test_disabled_scale_down() -> None:
    down = ScalingRules(0, "Disabled", (ScalingPolicy("Percent", 100, 15),))
    hpa = Autoscaler(_spec(Behavior(Behavior().scale_up, down)))
    decision = hpa.sync(0, 5, _at(0.0, 5))
    assert decision.metric_replicas == 0 and decision.desired_replicas == 5


def test_decision_row_names_inputs() -> None:
    decision = Autoscaler(_spec(None)).sync(0, 2, _at(0.2, 2))
    row = decision.to_row()
    assert row["vllm_waiting:usage"] == pytest.approx(0.2)
    assert row["desired_replicas"] == 4 and row["rescale"] is True


# --- manifest parsing --------------------------------------------------------------------


def _manifest(**spec: object) -> dict[str, object]:
    base: dict[str, object] = {
        "scaleTargetRef": {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "name": "vllm-us-west-2a",
        },
        "maxReplicas": 4,
    }
    base.update(spec)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "vllm-us-west-2a"},
        "spec": base,
    }


def test_manifest_defaults_and_partial_behavior() -> None:
    spec = hpa_spec_from_manifest(_manifest())
    assert spec.min_replicas == 1 and spec.metrics[0].name == "cpu"
    assert spec.behavior is None and spec.target_name == "vllm-us-west-2a"
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "vllm_num_requests_waiting"},
            "target": {"type": "AverageValue", "averageValue": "500m"},
        },
    }
    spec = hpa_spec_from_manifest(
        _manifest(
            minReplicas=2,
            metrics=[metric],
            behavior={"scaleDown": {"stabilizationWindowSeconds": 60}},
        )
    )
    assert spec.metrics[0].target == pytest.approx(0.5)
    assert spec.behavior is not None
    assert spec.behavior.scale_down.stabilization_window_s == 60
    assert spec.behavior.scale_up == Behavior().scale_up  # defaulted


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("500m", 0.5), ("2", 2.0), ("1k", 1e3), ("1Gi", 2.0**30), ("250n", 250e-9),
        ("3u", 3e-6), ("1P", 1e15), ("1E", 1e18), ("1Pi", 2.0**50), ("1Ei", 2.0**60),
        ("1e3", 1e3), ("1.5E2", 150.0),
    ],
)  # fmt: skip
def test_manifest_targets_accept_every_kubernetes_quantity(quantity: str, value: float) -> None:
    # n, u, P, E, Pi, Ei and exponents are valid quantities (k8s.io/apimachinery resource.Quantity);
    # the old hand-written parser knew only m, k, M, G, T, Ki..Ti.
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "vllm:num_requests_waiting"},
            "target": {"type": "AverageValue", "averageValue": quantity},
        },
    }
    spec = hpa_spec_from_manifest(_manifest(metrics=[metric]))
    assert spec.metrics[0].target == pytest.approx(value)


def test_a_malformed_quantity_names_itself() -> None:
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "vllm:num_requests_waiting"},
            "target": {"type": "AverageValue", "averageValue": "5 apples"},
        },
    }
    with pytest.raises(ConfigError, match="'5 apples' is not a Kubernetes quantity"):
        hpa_spec_from_manifest(_manifest(metrics=[metric]))


def test_manifest_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"maxReplicas"):
        hpa_spec_from_manifest(_manifest(maxReplicas=0))
    with pytest.raises(ConfigError, match=r"selectPolicy 'Most'"):
        hpa_spec_from_manifest(_manifest(behavior={"scaleUp": {"selectPolicy": "Most"}}))


def test_new_hpa_cannot_scale_down_before_one_window() -> None:
    # recordInitialRecommendation seeds a new HPA's history with the current replica count: an
    # idle target at 2 stays at 2 for the scale-down window, with or without behavior.
    for behavior in (None, Behavior()):
        hpa = Autoscaler(_spec(behavior), downscale_stabilization_s=300)
        first = hpa.sync(0, 2, _at(0.0, 2))
        assert first.metric_replicas == 0 and first.desired_replicas == 2
        assert hpa.sync(150, 2, _at(0.0, 2)).desired_replicas == 2
        assert hpa.sync(301, 2, _at(0.0, 2)).desired_replicas == 1
