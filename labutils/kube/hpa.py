"""The ``autoscaling/v2`` HorizontalPodAutoscaler algorithm as pure, documented functions.

The local twin's HPA loop and the notebooks (to explain a decision) use these; they follow the
Kubernetes controller (``pkg/controller/podautoscaler``: ``replica_calculator.go``
``calcPlainMetricReplicas``/``GetResourceReplicas``, ``horizontal.go``
``normalizeDesiredReplicas``/``normalizeDesiredReplicasWithBehaviors``/
``calculateScaleUpLimitWithScalingRules``/``calculateScaleDownLimitWithBehaviors``) and the
"Horizontal Pod Autoscaling" docs. Time is passed in (``now_s``), never read, so every decision
can be replayed.

One sync for one HPA:

1. per metric, :func:`replicas_for_metric` turns pod samples into a proposal (ratio to the
   target, tolerance, missing/unready pods filled in conservatively);
2. :func:`combine_proposals` takes the largest proposal (and refuses to scale down when some
   metric is unavailable);
3. :class:`Autoscaler` stabilizes and rate-limits the result (with or without ``behavior``) and
   remembers the recommendations and scale events the next sync needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from labutils.errors import ConfigError

__all__ = [
    "DEFAULT_DOWNSCALE_STABILIZATION_S",
    "DEFAULT_TOLERANCE",
    "Autoscaler",
    "Behavior",
    "HpaDecision",
    "HpaSpec",
    "MetricProposal",
    "MetricSpec",
    "PodSample",
    "ScalingPolicy",
    "ScalingRules",
    "combine_proposals",
    "default_scale_down_rules",
    "default_scale_up_rules",
    "hpa_spec_from_manifest",
    "replicas_for_metric",
    "scale_down_limit",
    "scale_up_limit",
    "with_behavior",
]

DEFAULT_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
DEFAULT_DOWNSCALE_STABILIZATION_S = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization
_SCALE_UP_LIMIT_FACTOR = 2.0  # without behavior: at most max(2 x current, 4) in one sync
_SCALE_UP_LIMIT_MINIMUM = 4

SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    """One ``behavior.scaleUp/scaleDown.policies`` entry: ``Pods`` or ``Percent`` per period."""

    type: Literal["Pods", "Percent"]
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """``HPAScalingRules``; ``stabilization_window_s=None`` means the controller default."""

    stabilization_window_s: float | None
    select_policy: SelectPolicy = "Max"
    policies: tuple[ScalingPolicy, ...] = ()
    tolerance: float | None = None  # per-direction tolerance (autoscaling/v2, k8s >= 1.33)


def default_scale_up_rules() -> ScalingRules:
    """API-server defaults for ``scaleUp``: no window; 4 pods or 100 % per 15 s, ``Max``."""
    return ScalingRules(
        0.0,
        "Max",
        (ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0)),
    )


def default_scale_down_rules() -> ScalingRules:
    """API-server defaults for ``scaleDown``: controller window (300 s); 100 % per 15 s."""
    return ScalingRules(None, "Max", (ScalingPolicy("Percent", 100, 15.0),))


@dataclass(frozen=True)
class Behavior:
    """``spec.behavior`` after API-server defaulting (both directions filled in)."""

    scale_up: ScalingRules = field(default_factory=default_scale_up_rules)
    scale_down: ScalingRules = field(default_factory=default_scale_down_rules)


@dataclass(frozen=True)
class MetricSpec:
    """One ``spec.metrics`` entry the twin can evaluate.

    ``kind`` is ``Pods`` (``AverageValue`` over pods), ``Resource`` (``Utilization`` in percent
    of requests or ``AverageValue``) or ``External``/``Object`` (``Value`` or ``AverageValue``).
    """

    kind: Literal["Pods", "Resource", "External", "Object"]
    name: str
    target_type: Literal["AverageValue", "Utilization", "Value"]
    target: float  # the averageValue / value, or the averageUtilization percent
    selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HpaSpec:
    """The parts of an ``autoscaling/v2`` HPA the algorithm needs."""

    name: str
    target_kind: str
    target_name: str
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricSpec, ...]
    behavior: Behavior | None = None


@dataclass(frozen=True)
class PodSample:
    """One target pod as the controller sees it.

    ``value`` is the pod's metric (``None`` when the metrics API had none for it); for
    ``Utilization`` also give ``request`` (the container resource request, same unit).
    """

    name: str
    value: float | None
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Running"
    ready: bool = True
    deleting: bool = False
    request: float | None = None


@dataclass(frozen=True)
class MetricProposal:
    """What one metric asks for, with the inputs that led there."""

    metric: str
    replicas: int
    usage: float  # average per pod (or utilization percent) over pods with metrics
    target: float
    ratio: float  # usage / target before filling in missing/unready pods
    ready_pods: int
    missing_pods: int
    unready_pods: int
    ignored_pods: int
    reason: str
    error: str | None = None


def _within(ratio: float, tolerance_down: float, tolerance_up: float) -> bool:
    return (1.0 - tolerance_down) <= ratio <= (1.0 + tolerance_up)


def _milli_average(values: Sequence[float]) -> float:
    # The controller averages in integer milli-units (metricsTotal / len, truncated).
    total_milli = sum(round(v * 1000) for v in values)
    return (total_milli // len(values)) / 1000.0


def replicas_for_metric(
    current_replicas: int,
    pods: Sequence[PodSample],
    spec: MetricSpec,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    tolerance_down: float | None = None,
    tolerance_up: float | None = None,
) -> MetricProposal:
    """Replicas one per-pod metric asks for (``calcPlainMetricReplicas`` / utilization).

    Failed pods and pods being deleted are ignored; pending pods (and, for the ``cpu``
    resource, not-ready pods) are *unready*; pods without a value are *missing*. With none of
    those, ``ceil(ratio x ready pods)`` unless the ratio is within the tolerance. Otherwise the
    missing pods count as the target (scale-down) or 0 (scale-up), unready pods as 0 on a
    scale-up, and the replica count stays when the refilled ratio is within tolerance or
    would reverse the direction.

    Returns:
        The proposal; ``error`` is set (and ``replicas`` is ``current_replicas``) when no pod
        had a metric.
    """
    t_down = tolerance if tolerance_down is None else tolerance_down
    t_up = tolerance if tolerance_up is None else tolerance_up
    utilization = spec.target_type == "Utilization"
    ready: dict[str, PodSample] = {}
    unready: list[str] = []
    missing: list[str] = []
    ignored = 0
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored += 1
        elif pod.phase == "Pending":
            unready.append(pod.name)
        elif pod.value is None:
            missing.append(pod.name)
        elif spec.kind == "Resource" and spec.name == "cpu" and not pod.ready:
            # The controller's CPU-only readiness rule (initialisation period simplified).
            unready.append(pod.name)
        else:
            ready[pod.name] = pod

    def usage_of(samples: Sequence[PodSample], fill: Mapping[str, float]) -> float:
        values = [s.value for s in samples if s.value is not None] + list(fill.values())
        if utilization:
            requests = [s.request or 0.0 for s in samples]
            requests += [_fill_request(samples) for _ in fill]
            total_request = sum(requests)
            if total_request <= 0:
                raise ConfigError(f"metric {spec.name}: Utilization needs pod resource requests")
            # GetResourceUtilizationRatio truncates to a whole percent.
            return float(int(sum(values) * 100 // total_request))
        return _milli_average(values)

    def proposal(
        replicas: int, usage: float, ratio: float, reason: str, error: str | None = None
    ) -> MetricProposal:
        return MetricProposal(
            spec.name, replicas, usage, spec.target, ratio, len(ready), len(missing),
            len(unready), ignored, reason, error,
        )  # fmt: skip

    if not ready:
        error = f"did not receive metric {spec.name!r} for any ready pod"
        return proposal(current_replicas, math.nan, math.nan, "no metrics", error)
    usage = usage_of(list(ready.values()), {})
    ratio = usage / spec.target
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if _within(ratio, t_down, t_up):
            return proposal(current_replicas, usage, ratio, "within tolerance")
        replicas = math.ceil(ratio * len(ready))
        return proposal(replicas, usage, ratio, "ratio")
    fill: dict[str, float] = {}
    # Missing pods: the target on a scale-down, 0 on a scale-up (for Utilization the target
    # percent of the request, i.e. max(100 %, target) in the controller's resource path).
    for name in missing:
        if ratio < 1.0:
            fill[name] = _target_value(spec, ready.values())
        else:
            fill[name] = 0.0
    if scale_up_with_unready:
        for name in unready:
            fill[name] = 0.0
    new_usage = usage_of(list(ready.values()), fill)
    new_ratio = new_usage / spec.target
    if _within(new_ratio, t_down, t_up) or (ratio > 1.0 > new_ratio) or (ratio < 1.0 < new_ratio):
        return proposal(
            current_replicas, usage, ratio, "refilled ratio within tolerance or reversed"
        )
    replicas = math.ceil(new_ratio * (len(ready) + len(fill)))
    if (new_ratio < 1.0 and replicas > current_replicas) or (
        new_ratio > 1.0 and replicas < current_replicas
    ):
        return proposal(current_replicas, usage, ratio, "pod count would reverse direction")
    return proposal(replicas, usage, ratio, "refilled ratio")


def _fill_request(samples: Sequence[PodSample]) -> float:
    requests = [s.request for s in samples if s.request]
    return sum(requests) / len(requests) if requests else 0.0


def _target_value(spec: MetricSpec, ready: Any) -> float:
    if spec.target_type == "Utilization":
        # The resource path fills missing pods with max(100 %, target) of their request.
        return max(100.0, spec.target) / 100.0 * _fill_request(list(ready))
    return spec.target


def combine_proposals(
    current_replicas: int, proposals: Sequence[MetricProposal]
) -> tuple[int | None, str]:
    """The largest proposal over all metrics (``computeReplicasForMetrics``).

    Returns:
        ``(replicas, reason)``; ``replicas`` is ``None`` (do not scale) when every metric failed,
        or when some failed and the others would scale down.
    """
    valid = [p for p in proposals if p.error is None]
    invalid = len(proposals) - len(valid)
    if not valid:
        return None, "no metric available: " + "; ".join(str(p.error) for p in proposals)
    best = max(valid, key=lambda p: p.replicas)
    if invalid and best.replicas < current_replicas:
        return None, f"{invalid} metric(s) unavailable; not scaling down"
    return best.replicas, f"largest proposal from {best.metric}"


def _events_in_period(events: Sequence[tuple[float, int]], now_s: float, period_s: float) -> int:
    cutoff = now_s - period_s
    return sum(change for t, change in events if t > cutoff)


def scale_up_limit(
    current_replicas: int,
    rules: ScalingRules,
    scale_up_events: Sequence[tuple[float, int]],
    scale_down_events: Sequence[tuple[float, int]],
    now_s: float,
) -> int:
    """Highest count the scale-up policies allow now (``calculateScaleUpLimitWithScalingRules``).

    Each policy starts from the count at the beginning of its period (current minus recent
    scale-ups plus recent scale-downs) and adds ``Pods`` or ``ceil(x (1 + Percent/100))``;
    ``Max`` takes the most permissive policy, ``Min`` the least, ``Disabled`` allows none.
    """
    if rules.select_policy == "Disabled":
        return current_replicas
    proposals = []
    for policy in rules.policies:
        start = (
            current_replicas
            - _events_in_period(scale_up_events, now_s, policy.period_s)
            + _events_in_period(scale_down_events, now_s, policy.period_s)
        )
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if not proposals:
        return current_replicas
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(
    current_replicas: int,
    rules: ScalingRules,
    scale_up_events: Sequence[tuple[float, int]],
    scale_down_events: Sequence[tuple[float, int]],
    now_s: float,
) -> int:
    """Lowest count the scale-down policies allow now (``calculateScaleDownLimitWithBehaviors``).

    ``Pods`` subtracts its value, ``Percent`` keeps ``trunc(x (1 - Percent/100))`` of the count
    at the start of the period; ``Max`` picks the biggest change (the lowest count).
    """
    if rules.select_policy == "Disabled":
        return current_replicas
    proposals = []
    for policy in rules.policies:
        start = (
            current_replicas
            - _events_in_period(scale_up_events, now_s, policy.period_s)
            + _events_in_period(scale_down_events, now_s, policy.period_s)
        )
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if not proposals:
        return current_replicas
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


@dataclass(frozen=True)
class HpaDecision:
    """One sync's outcome with every input, a row of the twin's events table."""

    time_s: float
    hpa: str
    current_replicas: int
    metric_replicas: int | None  # largest metric proposal (before stabilization/limits)
    stabilized_replicas: int
    desired_replicas: int
    reason: str
    limit_reason: str
    proposals: tuple[MetricProposal, ...]

    @property
    def rescale(self) -> bool:
        """Whether the controller changes the replica count."""
        return self.desired_replicas != self.current_replicas

    def to_row(self) -> dict[str, Any]:
        """A flat dict (one column per metric's usage/target/replicas) for a DataFrame."""
        row: dict[str, Any] = {
            "time_s": self.time_s,
            "hpa": self.hpa,
            "current_replicas": self.current_replicas,
            "metric_replicas": self.metric_replicas,
            "stabilized_replicas": self.stabilized_replicas,
            "desired_replicas": self.desired_replicas,
            "rescale": self.rescale,
            "reason": self.reason,
            "limit_reason": self.limit_reason,
        }
        for p in self.proposals:
            row[f"{p.metric}:usage"] = p.usage
            row[f"{p.metric}:target"] = p.target
            row[f"{p.metric}:replicas"] = p.replicas
            row[f"{p.metric}:ready_pods"] = p.ready_pods
            row[f"{p.metric}:missing_pods"] = p.missing_pods
            row[f"{p.metric}:unready_pods"] = p.unready_pods
        return row


@dataclass
class Autoscaler:
    """The controller's memory for one HPA: past recommendations and scale events.

    Call :meth:`sync` once per sync period with the current replica count and each metric's pod
    samples; it returns the decision and records what the next sync needs.
    """

    spec: HpaSpec
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_up_events: list[tuple[float, int]] = field(default_factory=list)
    scale_down_events: list[tuple[float, int]] = field(default_factory=list)
    seeded: bool = False

    def sync(
        self,
        now_s: float,
        current_replicas: int,
        samples: Mapping[str, Sequence[PodSample]],
        spec_replicas: int | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> HpaDecision:
        """Decide the replica count (``reconcileAutoscaler``) and remember the decision.

        Args:
            now_s: the time of this sync (any monotonic clock, in seconds).
            current_replicas: the target's ``status.replicas``.
            samples: per metric name, the target pods as seen now.
            spec_replicas: the target's ``spec.replicas`` (0 disables autoscaling); defaults to
                ``current_replicas``.
            errors: per metric name, why its value could not be fetched (the metrics API's
                error, e.g. "unable to get metric ..."): that metric is invalid this sync, as
                in the controller's ``computeReplicasForMetrics``.
        """
        spec = self.spec
        spec_replicas = current_replicas if spec_replicas is None else spec_replicas
        if not self.seeded:
            # recordInitialRecommendation: a new HPA's history starts with the current replica
            # count, so it cannot scale down before one stabilization window has passed.
            # [kubernetes pkg/controller/podautoscaler/horizontal.go]
            self.recommendations.append((now_s, current_replicas))
            self.seeded = True
        proposals: tuple[MetricProposal, ...] = ()
        metric_replicas: int | None = None
        if spec_replicas == 0 and spec.min_replicas != 0:
            return self._decided(now_s, current_replicas, None, 0, 0, "replicas is zero; "
                                 "autoscaling is disabled", "", proposals)  # fmt: skip
        if current_replicas > spec.max_replicas:
            desired = spec.max_replicas
            return self._decided(now_s, current_replicas, None, desired, desired,
                                 "current replicas above maxReplicas", "", proposals)  # fmt: skip
        if current_replicas < spec.min_replicas:
            desired = spec.min_replicas
            return self._decided(now_s, current_replicas, None, desired, desired,
                                 "current replicas below minReplicas", "", proposals)  # fmt: skip
        proposals = tuple(
            self._failed(m, current_replicas, errors[m.name])
            if errors and m.name in errors
            else self._proposal(current_replicas, m, samples)
            for m in spec.metrics
        )
        metric_replicas, reason = combine_proposals(current_replicas, proposals)
        if metric_replicas is None:
            return self._decided(now_s, current_replicas, None, current_replicas,
                                 current_replicas, reason, "", proposals)  # fmt: skip
        if spec.behavior is None:
            stabilized, desired, limit = self._normalize_plain(now_s, current_replicas,
                                                               metric_replicas)  # fmt: skip
        else:
            stabilized, desired, limit = self._normalize_behavior(now_s, current_replicas,
                                                                  metric_replicas)  # fmt: skip
        return self._decided(now_s, current_replicas, metric_replicas, stabilized, desired,
                             reason, limit, proposals)  # fmt: skip

    @staticmethod
    def _failed(metric: MetricSpec, current: int, error: str) -> MetricProposal:
        return MetricProposal(metric.name, current, math.nan, metric.target, math.nan, 0, 0, 0, 0,
                              "metric unavailable", error)  # fmt: skip

    def _proposal(
        self, current: int, metric: MetricSpec, samples: Mapping[str, Sequence[PodSample]]
    ) -> MetricProposal:
        up_rules = self.spec.behavior.scale_up if self.spec.behavior else None
        down_rules = self.spec.behavior.scale_down if self.spec.behavior else None
        t_up = up_rules.tolerance if up_rules and up_rules.tolerance is not None else None
        t_down = down_rules.tolerance if down_rules and down_rules.tolerance is not None else None
        return replicas_for_metric(
            current,
            samples.get(metric.name, ()),
            metric,
            tolerance=self.tolerance,
            tolerance_down=t_down,
            tolerance_up=t_up,
        )

    def _decided(
        self,
        now_s: float,
        current: int,
        metric_replicas: int | None,
        stabilized: int,
        desired: int,
        reason: str,
        limit: str,
        proposals: tuple[MetricProposal, ...],
    ) -> HpaDecision:
        if desired != current and self.spec.behavior is not None:
            change = desired - current
            events = self.scale_up_events if change > 0 else self.scale_down_events
            # storeScaleEvent records magnitudes: a period starts at current - ups + downs.
            events.append((now_s, abs(change)))
            self._prune_events(now_s)
        return HpaDecision(
            now_s, self.spec.name, current, metric_replicas, stabilized, desired, reason, limit,
            proposals,
        )  # fmt: skip

    def _prune_events(self, now_s: float) -> None:
        behavior = self.spec.behavior
        assert behavior is not None
        periods = [p.period_s for p in behavior.scale_up.policies + behavior.scale_down.policies]
        keep_s = max(periods, default=0.0)
        self.scale_up_events[:] = [e for e in self.scale_up_events if e[0] > now_s - keep_s]
        self.scale_down_events[:] = [e for e in self.scale_down_events if e[0] > now_s - keep_s]

    def _normalize_plain(self, now_s: float, current: int, proposed: int) -> tuple[int, int, str]:
        # normalizeDesiredReplicas: the highest recommendation of the downscale window, then
        # [minReplicas, min(maxReplicas, max(2 x current, 4))].
        window_s = self.downscale_stabilization_s
        recent = [r for t, r in self.recommendations if t > now_s - window_s]
        stabilized = max([proposed, *recent])
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now_s - window_s]
        self.recommendations.append((now_s, proposed))
        scale_up_cap = int(max(_SCALE_UP_LIMIT_FACTOR * current, _SCALE_UP_LIMIT_MINIMUM))
        if self.spec.max_replicas > scale_up_cap:
            maximum, max_reason = scale_up_cap, "ScaleUpLimit"
        else:
            maximum, max_reason = self.spec.max_replicas, "TooManyReplicas"
        if stabilized < self.spec.min_replicas:
            return stabilized, self.spec.min_replicas, "TooFewReplicas"
        if stabilized > maximum:
            return stabilized, maximum, max_reason
        reason = "ScaleDownStabilized" if stabilized != proposed else "DesiredWithinRange"
        return stabilized, stabilized, reason

    def _normalize_behavior(
        self, now_s: float, current: int, proposed: int
    ) -> tuple[int, int, str]:
        behavior = self.spec.behavior
        assert behavior is not None
        up_window_s = behavior.scale_up.stabilization_window_s or 0.0
        down_window_s = behavior.scale_down.stabilization_window_s
        if down_window_s is None:
            down_window_s = self.downscale_stabilization_s
        # stabilizeRecommendationWithBehaviors: the lowest recent recommendation caps a
        # scale-up, the highest caps a scale-down.
        up_rec = proposed
        down_rec = proposed
        for t, rec in self.recommendations:
            if t > now_s - up_window_s:
                up_rec = min(up_rec, rec)
            if t > now_s - down_window_s:
                down_rec = max(down_rec, rec)
        stabilized = current
        stabilized = max(stabilized, up_rec)
        stabilized = min(stabilized, down_rec)
        keep_s = max(up_window_s, down_window_s)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now_s - keep_s]
        self.recommendations.append((now_s, proposed))
        limit = "ScaleUpStabilized" if stabilized < proposed else (
            "ScaleDownStabilized" if stabilized > proposed else "DesiredWithinRange"
        )  # fmt: skip
        desired = stabilized
        spec = self.spec
        if stabilized > current:
            cap = scale_up_limit(
                current, behavior.scale_up, self.scale_up_events, self.scale_down_events, now_s
            )
            cap = max(cap, current)
            if spec.max_replicas > cap:
                maximum, reason = cap, "ScaleUpLimit"
            else:
                maximum, reason = spec.max_replicas, "TooManyReplicas"
            if stabilized > maximum:
                desired, limit = maximum, reason
        elif stabilized < current:
            floor = scale_down_limit(
                current, behavior.scale_down, self.scale_up_events, self.scale_down_events, now_s
            )
            floor = min(floor, current)
            if spec.min_replicas < floor:
                minimum, reason = floor, "ScaleDownLimit"
            else:
                minimum, reason = spec.min_replicas, "TooFewReplicas"
            if stabilized < minimum:
                desired, limit = minimum, reason
        return stabilized, desired, limit


def _parse_rules(raw: Any, default: ScalingRules, where: str) -> ScalingRules:
    # SetDefaults_HorizontalPodAutoscalerBehavior: nil fields take the direction's defaults.
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    policies = default.policies
    if raw.get("policies"):
        policies = tuple(
            ScalingPolicy(p["type"], int(p["value"]), float(p["periodSeconds"]))
            for p in raw["policies"]
        )
        for p in policies:
            if p.type not in ("Pods", "Percent"):
                raise ConfigError(f"{where}: policy type {p.type!r}; choose Pods or Percent")
    window = raw.get("stabilizationWindowSeconds")
    select = raw.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        raise ConfigError(f"{where}: selectPolicy {select!r}; choose one of: Max, Min, Disabled")
    tolerance = raw.get("tolerance")
    return ScalingRules(
        float(window) if window is not None else default.stabilization_window_s,
        select,
        policies,
        float(tolerance) if tolerance is not None else None,
    )


def _quantity(value: Any) -> float:
    """A Kubernetes quantity (``500m``, ``1Gi``, ``2n``, ``1Ei``, ``1e3``...) as a float.

    Parsed by the official client's ``kubernetes.utils.parse_quantity`` (every SI and binary
    suffix and exponents, as ``k8s.io/apimachinery/pkg/api/resource`` accepts them); imported
    here, not at module level, so that processes that never read a manifest stay lean.

    Raises:
        ConfigError: ``value`` is not a Kubernetes quantity.
    """
    from kubernetes.utils import parse_quantity

    try:
        return float(parse_quantity(value))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{value!r} is not a Kubernetes quantity ({exc})") from None


def _parse_metric(raw: dict[str, Any], where: str) -> MetricSpec:
    kind = raw.get("type")
    key = {"Pods": "pods", "Resource": "resource", "External": "external", "Object": "object"}
    if kind not in key:
        raise ConfigError(f"{where}: metric type {kind!r}; choose one of: {', '.join(key)}")
    body = raw.get(key[kind]) or {}
    if kind == "Resource":
        name = body.get("name", "")
    else:
        name = (body.get("metric") or {}).get("name", "")
    selector = ((body.get("metric") or {}).get("selector") or {}).get("matchLabels") or {}
    target = body.get("target") or {}
    ttype = target.get("type")
    if ttype == "Utilization":
        value = float(target["averageUtilization"])
    elif ttype == "AverageValue":
        value = _quantity(target["averageValue"])
    elif ttype == "Value":
        value = _quantity(target["value"])
    else:
        raise ConfigError(
            f"{where}: target type {ttype!r}; choose one of: AverageValue, Utilization, Value"
        )
    if value <= 0:
        raise ConfigError(f"{where}: metric {name!r} target must be > 0, got {value}")
    return MetricSpec(kind, name, ttype, value, dict(selector))


def hpa_spec_from_manifest(obj: Mapping[str, Any], where: str = "HPA") -> HpaSpec:
    """Read an ``autoscaling/v2`` HorizontalPodAutoscaler object (a parsed YAML dict).

    Applies the API server's defaults: ``minReplicas`` 1, CPU at 80 % when no metrics are
    given, and the default ``scaleUp``/``scaleDown`` rules where ``behavior`` is set but partial.

    Raises:
        ConfigError: the object is not an autoscaling/v2 HPA or has an unsupported field value.
    """
    if obj.get("kind") != "HorizontalPodAutoscaler" or not str(obj.get("apiVersion", "")).endswith(
        "/v2"
    ):
        raise ConfigError(
            f"{where}: expected apiVersion autoscaling/v2, kind HorizontalPodAutoscaler"
        )
    name = str((obj.get("metadata") or {}).get("name", ""))
    spec = obj.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    max_replicas = spec.get("maxReplicas")
    if not isinstance(max_replicas, int) or max_replicas < 1:
        raise ConfigError(f"{where}: spec.maxReplicas must be an integer >= 1")
    min_replicas = int(spec.get("minReplicas", 1))
    if min_replicas > max_replicas:
        raise ConfigError(f"{where}: minReplicas {min_replicas} > maxReplicas {max_replicas}")
    raw_metrics = spec.get("metrics") or [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                    "averageUtilization": 80}}}
    ]  # fmt: skip
    metrics = tuple(
        _parse_metric(m, f"{where}: spec.metrics[{i}]") for i, m in enumerate(raw_metrics)
    )
    behavior = None
    raw_behavior = spec.get("behavior")
    if raw_behavior is not None:
        behavior = Behavior(
            _parse_rules(raw_behavior.get("scaleUp"), default_scale_up_rules(),
                         f"{where}: behavior.scaleUp"),
            _parse_rules(raw_behavior.get("scaleDown"), default_scale_down_rules(),
                         f"{where}: behavior.scaleDown"),
        )  # fmt: skip
    return HpaSpec(
        name=name,
        target_kind=str(ref.get("kind", "")),
        target_name=str(ref.get("name", "")),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        metrics=metrics,
        behavior=behavior,
    )


def with_behavior(spec: HpaSpec, behavior: Behavior | None) -> HpaSpec:
    """``spec`` with another ``behavior`` (for notebooks comparing policies)."""
    return replace(spec, behavior=behavior)
