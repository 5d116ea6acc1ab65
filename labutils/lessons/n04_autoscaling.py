"""Notebook 04's autoscaling lessons: the HPA on queue depth, replayed and compared; GPU nodes.

The HPA decisions come from the backend (the twin logs one row per sync with its inputs:
``TwinBackend.hpa_events()``); :func:`replay` recomputes them with :mod:`labutils.kube.hpa` from the
logged inputs, :func:`what_if` runs other ``behavior`` policies over the same recorded queue
series. Karpenter's share (nodes for new groups) is read from the rendered NodePool and
EC2NodeClass. Real clusters sync every 15 s with a 300 s scale-down window; a lab run may
shorten the HPA's windows/periods with :func:`drill_manifests` (said so, with both values, by
:func:`hpa_settings`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from labutils import catalog
from labutils.config import default_state_dir, lab_target, load_config
from labutils.errors import ConfigError, MetricsError, ValidationError
from labutils.kube.hpa import (
    DEFAULT_DOWNSCALE_STABILIZATION_S,
    Autoscaler,
    Behavior,
    HpaSpec,
    PodSample,
    ScalingPolicy,
    ScalingRules,
    hpa_spec_from_manifest,
    with_behavior,
)
from labutils.kube.labels import GPU_RESOURCE, INSTANCE_TYPE_LABEL
from labutils.manifests import load_objects
from labutils.manifests.variants import render_variant
from labutils.protocol import Backend
from labutils.targets import get_backend

__all__ = [
    "CONTROLLER_SYNC_PERIOD_S",
    "DecisionInputs",
    "adapter_rules",
    "back_at_min",
    "check_decisions_match",
    "check_scale_down_after_window",
    "check_scaled_up",
    "check_what_if_by_hand",
    "decision_inputs",
    "decisions",
    "drill_backend",
    "drill_manifests",
    "example_policies",
    "gpu_nodes_needed",
    "hpa_settings",
    "hpa_spec",
    "metric_warnings",
    "node_pool_settings",
    "replay",
    "replica_counts",
    "scaled_behavior",
    "what_if",
    "what_if_summary",
]

# kube-controller-manager --horizontal-pod-autoscaler-sync-period default
CONTROLLER_SYNC_PERIOD_S = 15.0


# --- set-up --------------------------------------------------------------------------------
def drill_backend(
    target: str | None = None,
    *,
    sync_period_s: float = CONTROLLER_SYNC_PERIOD_S,
    health_time_scale: float = 1.0,
    model_load_s: float | None = 2.0,
    scrape_interval_s: float | None = None,
) -> Backend:
    """The backend for an autoscaling drill; the twin gets its HPA sync period and timings.

    ``model_load_s=None`` gives each group the HPA adds the start time of a real GPU group
    (node launch, image pull, weight load) times ``health_time_scale``, the twin's time factor.
    The twin's Prometheus scrapes the leaders every ``scrape_interval_s`` (default: the sync
    period). The HPA reads the queue from Prometheus, so a scrape interval longer than the
    sync period (the PodMonitor's 15 s against a 1 s drill sync) would feed it a queue up to
    one interval old; on a cluster both are 15 s. On ``eks`` the options do not apply (the
    cluster's controller and Prometheus have their own periods).
    """
    if lab_target(target) == "local":
        scrape_s = sync_period_s if scrape_interval_s is None else scrape_interval_s
        return get_backend(target, sync_period_s=sync_period_s, time_scale=health_time_scale,
                           model_load_s=model_load_s, scrape_interval_s=scrape_s)  # fmt: skip
    return get_backend(target)


def scaled_behavior(behavior: Behavior, factor: float) -> Behavior:
    """``behavior`` with every stabilization window and policy period multiplied by ``factor``."""

    def rules(r: ScalingRules, default_window_s: float) -> ScalingRules:
        window = default_window_s if r.stabilization_window_s is None else r.stabilization_window_s
        policies = tuple(
            ScalingPolicy(p.type, p.value, max(1.0, round(p.period_s * factor))) for p in r.policies
        )
        scaled = float(round(window * factor))
        return replace(r, stabilization_window_s=scaled, policies=policies)

    # an unset scale-down window is the controller's default: scale that too
    return Behavior(
        rules(behavior.scale_up, 0.0), rules(behavior.scale_down, DEFAULT_DOWNSCALE_STABILIZATION_S)
    )


def drill_manifests(
    *,
    zones: Sequence[str] | None = None,
    hpa_time_scale: float = 1.0,
    replicas: int | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Render ``manifests/`` for a drill: some zones, start replicas, shorter HPA timings.

    The model, GPU, HPA metric, target and bounds stay those of ``manifests/lab.yaml``; only
    the HPA ``behavior`` windows and periods are multiplied by ``hpa_time_scale`` (windows
    rounded to whole seconds, periods at least 1 s).

    Returns:
        The rendered folder (default ``<state dir>/../rendered-hpa-x<scale>``).

    Raises:
        ConfigError: a zone is not in ``lab.yaml`` or the scale is not positive.
    """
    cfg = load_config()
    start = cfg.min_replicas if replicas is None else replicas
    default = default_state_dir().parent / f"rendered-hpa-x{hpa_time_scale:g}"
    out = Path(out_dir) if out_dir else default
    return render_variant(out, zones=zones, replicas=start, hpa_time_scale=hpa_time_scale)


def _object(rendered_dir: str | Path, kind: str, zone: str) -> dict[str, Any]:
    folder = Path(rendered_dir) / "zones" / zone
    for obj in load_objects(folder):
        if obj.kind == kind:
            return dict(obj.data)
    raise ConfigError(f"{folder}: no {kind}; render the manifests (labctl render) for {zone}")


def hpa_spec(rendered_dir: str | Path, zone: str) -> HpaSpec:
    """The zone's HPA from the rendered manifests, as :mod:`labutils.kube.hpa` reads it."""
    return hpa_spec_from_manifest(_object(rendered_dir, "HorizontalPodAutoscaler", zone),
                                  f"{rendered_dir}/zones/{zone}/hpa.yaml")  # fmt: skip


def _rules_text(rules: ScalingRules, default_window_s: float) -> tuple[str, str]:
    window = rules.stabilization_window_s
    window_text = (
        f"{default_window_s:g} s (controller default)" if window is None else f"{window:g} s"
    )
    policies = f" {rules.select_policy} of: " + ", ".join(
        f"{p.value}{' %' if p.type == 'Percent' else ' groups'} per {p.period_s:g} s"
        for p in rules.policies
    )
    return window_text, policies.strip()


def hpa_settings(
    lab_dir: str | Path,
    drill_dir: str | Path,
    zone: str,
    *,
    drill_sync_period_s: float,
) -> pd.DataFrame:
    """The HPA's metric, target, bounds and behavior: the lab's manifests beside this drill's."""
    rows: dict[str, list[str]] = {}
    for _column, folder, sync_s in (
        ("lab manifests (real cluster)", lab_dir, CONTROLLER_SYNC_PERIOD_S),
        ("this drill", drill_dir, drill_sync_period_s),
    ):
        spec = hpa_spec(folder, zone)
        behavior = spec.behavior or Behavior()
        metric = spec.metrics[0]
        up_window, up_policies = _rules_text(behavior.scale_up, 0.0)
        down_window, down_policies = _rules_text(behavior.scale_down, 300.0)
        values = {
            "HPA / target": f"{spec.name} -> {spec.target_kind}/{spec.target_name}",
            "metric": f"{metric.kind} {metric.name}",
            "target": f"{metric.target_type} {metric.target:g} per group",
            "min / max groups": f"{spec.min_replicas} / {spec.max_replicas}",
            "sync period": f"{sync_s:g} s",
            "scaleUp window": up_window,
            "scaleUp policies": up_policies,
            "scaleDown window": down_window,
            "scaleDown policies": down_policies,
        }
        for key, value in values.items():
            rows.setdefault(key, []).append(value)
    columns = ["lab manifests (real cluster)", "this drill"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("setting")


def adapter_rules(rendered_dir: str | Path) -> pd.DataFrame:
    """prometheus-adapter rules: which Prometheus series becomes which HPA metric, and how."""
    path = Path(rendered_dir) / "monitoring" / "prometheus-adapter-rules.yaml"
    rows = []
    for obj in load_objects(path):
        config = yaml.safe_load((obj.data.get("data") or {}).get("config.yaml", "")) or {}
        for rule in config.get("rules") or []:
            rows.append({
                "series (Prometheus)": rule.get("seriesQuery", ""),
                "HPA metric name": (rule.get("name") or {}).get("as", ""),
                "per": ", ".join((rule.get("resources") or {}).get("overrides") or {}),
                "metricsQuery": rule.get("metricsQuery", ""),
            })  # fmt: skip
    if not rows:
        raise ConfigError(f"{path}: no prometheus-adapter rules found")
    return pd.DataFrame(rows)


def back_at_min(spec: HpaSpec) -> Callable[[pd.DataFrame], bool]:
    """A ``settle_until`` for :func:`run_monitored_load`: the HPA's LWS is at ``minReplicas``."""

    def done(status: pd.DataFrame) -> bool:
        rows = status[status["lws"].eq(spec.target_name)]
        return not rows.empty and int(rows["replicas"].sum()) <= spec.min_replicas

    return done


def example_policies(spec: HpaSpec, time_scale: float = 1.0) -> dict[str, Behavior]:
    """Behaviors to compare with the deployed one (timings in the drill's ``time_scale``).

    ``as deployed``; ``Kubernetes defaults`` (no ``behavior``: 4 groups or +100 % per 15 s up,
    300 s window down); ``aggressive up`` (twice the deployed scale-up step);
    ``no scale-down window``.
    """
    deployed = spec.behavior or Behavior()
    up, down = deployed.scale_up, deployed.scale_down
    doubled = tuple(ScalingPolicy(p.type, 2 * p.value, p.period_s) for p in up.policies)
    return {
        "as deployed": deployed,
        "Kubernetes defaults": scaled_behavior(Behavior(), time_scale),
        "aggressive up (2x step)": Behavior(replace(up, policies=doubled), down),
        "no scale-down window": Behavior(up, replace(down, stabilization_window_s=0.0)),
    }


# --- decisions -----------------------------------------------------------------------------
def decisions(backend: Backend, hpa: str | None = None, *, since_s: float = 0.0) -> pd.DataFrame:
    """One row per HPA sync with its inputs: replicas, the metric's average, target, pods.

    ``t_s`` is the sync's time relative to ``since_s`` (e.g. ``run.started_at``). On ``eks``
    the rows are the HPAs' rescale events and their status now (column ``source``): a cluster
    does not expose each sync's inputs, so ``usage`` (except in the status row), the pod counts
    and ``metric_replicas``/``stabilized_replicas`` are NaN there, and rescale events before
    ``since_s`` (an earlier run's) are left out.

    Raises:
        MetricsError: nothing was logged yet.
    """
    frame = backend.hpa_events()
    if frame.empty:
        raise MetricsError("no HPA sync logged yet; is an HPA in the rendered manifests?")
    if hpa:
        frame = frame[frame["hpa"].eq(hpa)]
    if "source" in frame:
        # A cluster keeps Events for an hour: rescales of an earlier run are not this run's.
        # Event timestamps have whole seconds, hence the floor.
        frame = frame[frame["time_s"] >= math.floor(since_s)]
    metric_cols = [c for c in frame.columns if ":" in c]
    metric = metric_cols[0].split(":")[0] if metric_cols else ""
    out = frame.rename(columns={f"{metric}:{k}": k for k in (
        "usage", "target", "replicas", "ready_pods", "missing_pods", "unready_pods")})  # fmt: skip
    out = out.assign(metric=metric, t_s=(out["time_s"] - since_s).round(2))
    keep = ["t_s", "time_s", "hpa", "metric", "current_replicas", "usage", "target", "ready_pods",
            "missing_pods", "unready_pods", "metric_replicas", "stabilized_replicas",
            "desired_replicas", "reason", "limit_reason"]  # fmt: skip
    if "source" in out:  # a cluster's rows: say which are events and which the status
        keep.append("source")
    for column in keep:
        if column not in out:
            out[column] = np.nan
    return out[keep].sort_values("time_s").reset_index(drop=True)


@dataclass(frozen=True)
class DecisionInputs:
    """Where one logged HPA sync's metric came from: the PromQL and what it returned per pod."""

    hpa: str
    time_s: float  # the sync (Unix seconds)
    metric: str  # the HPA's metric name (served by prometheus-adapter)
    query: str  # the adapter rule's metricsQuery, rendered for the LWS's leader pods
    eval_time_s: float  # when Prometheus evaluated it
    pods: dict[str, float]  # per leader pod, as the HPA received it (milli-units)


def decision_inputs(backend: Backend, hpa: str, time_s: float) -> DecisionInputs | None:
    """The PromQL behind the HPA sync logged at ``time_s``, and the per-pod values it returned.

    The twin logs them with every sync (``labutils.metrics.adapter``: the prometheus-adapter
    rule rendered for the LWS's leaders, evaluated by Prometheus). A cluster's HPA keeps none
    of it (``None``); a sync whose metric could not be fetched has none either (``None``).
    """
    frame = backend.hpa_events()
    if frame.empty or "source" in frame or "hpa" not in frame:
        return None
    queries = [c for c in frame.columns if c.endswith(":query")]
    rows = frame[frame["hpa"].eq(hpa) & (frame["time_s"] - time_s).abs().lt(1e-6)]
    if rows.empty or not queries:
        return None
    row = rows.iloc[0]
    metric = queries[0].removesuffix(":query")
    if pd.isna(row[f"{metric}:query"]):
        return None
    pods = row[f"{metric}:pods"]
    return DecisionInputs(
        hpa=hpa,
        time_s=float(row["time_s"]),
        metric=metric,
        query=str(row[f"{metric}:query"]),
        eval_time_s=float(row[f"{metric}:eval_time_s"]),
        pods={str(k): float(v) for k, v in (pods if isinstance(pods, dict) else {}).items()},
    )


def metric_warnings(backend: Backend, *, since_s: float = 0.0) -> pd.DataFrame:
    """The HPAs' ``FailedGetPodsMetric`` warnings: object, message, how many syncs, first/last.

    An HPA that cannot get its metric (e.g. before Prometheus has scraped new leaders, or a
    broken adapter rule) logs this and keeps its replica count. ``first_s``/``last_s`` are
    seconds after ``since_s`` (on ``eks``, from the events' timestamps).
    """
    events = backend.events()
    columns = ["object", "message", "syncs", "first_s", "last_s"]
    if events.empty or "reason" not in events:
        return pd.DataFrame(columns=columns)
    failed = events[events["reason"].eq("FailedGetPodsMetric")].copy()
    if "time_s" in failed:
        failed["at_s"] = failed["time_s"].astype(float)
    else:  # a cluster's Events: RFC 3339 timestamps, a count per aggregated event
        stamps = pd.to_datetime(failed["time"], utc=True, errors="coerce")
        failed["at_s"] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    failed = failed[failed["at_s"] >= since_s]
    if failed.empty:
        return pd.DataFrame(columns=columns)
    counts = failed["count"] if "count" in failed else pd.Series(1, index=failed.index)
    failed = failed.assign(syncs=counts.fillna(1).astype(int))
    grouped = failed.groupby(["object", "message"], sort=False).agg(
        syncs=("syncs", "sum"), first_s=("at_s", "min"), last_s=("at_s", "max")
    )
    grouped[["first_s", "last_s"]] = (grouped[["first_s", "last_s"]] - since_s).round(1)
    return grouped.reset_index()[columns]


def _samples(row: Any, average: float, pods: int) -> dict[str, list[PodSample]]:
    samples = [PodSample(f"ready-{i}", average) for i in range(pods)]
    missing = 0 if pd.isna(row["missing_pods"]) else int(row["missing_pods"])
    unready = 0 if pd.isna(row["unready_pods"]) else int(row["unready_pods"])
    samples += [PodSample(f"missing-{i}", None, ready=False) for i in range(missing)]
    samples += [PodSample(f"pending-{i}", None, phase="Pending", ready=False)
                for i in range(unready)]  # fmt: skip
    return {str(row["metric"]): samples}


def replica_counts(log: pd.DataFrame) -> list[int]:
    """Every replica count the HPA had or asked for during the log, ascending."""
    seen = set(log["current_replicas"].dropna()) | set(log["desired_replicas"].dropna())
    return sorted(int(v) for v in seen)


def _inputs_observed(log: pd.DataFrame) -> bool:
    # A cluster's rows (EksBackend.hpa_events) carry a "source" and no per-sync inputs.
    return "source" not in log.columns


_NOT_OBSERVABLE = (
    "not checkable on eks: the Kubernetes API keeps no per-sync HPA inputs (per-pod metric "
    "values, ready/missing pods, recommendations), only rescale events and the current status"
)


def _ups(log: pd.DataFrame) -> pd.DataFrame:
    return log[_direction(log) > 0]


def _downs(log: pd.DataFrame) -> pd.DataFrame:
    return log[_direction(log) < 0]


def _direction(log: pd.DataFrame) -> pd.Series:
    """+1 scale-up, -1 scale-down, 0 none, per row.

    Where the replicas before a rescale are unknown (a cluster's first rescale event seen), the
    HPA controller's reason says the direction ("... above target" / "All metrics below
    target", or the min/max replica bounds).
    """
    desired = pd.to_numeric(log["desired_replicas"], errors="coerce")
    current = pd.to_numeric(log["current_replicas"], errors="coerce")
    known = (desired - current).clip(-1.0, 1.0).fillna(0.0)
    if "reason" not in log:
        return known
    reason = log["reason"].astype("string").fillna("")
    up = reason.str.contains("above target|below Spec.MinReplicas", regex=True)
    down = reason.str.contains("below target|above Spec.MaxReplicas", regex=True)
    guessed = up.astype(float) - down.astype(float)
    unknown = current.isna() & desired.notna()
    return known.where(~unknown, guessed)


def replay(log: pd.DataFrame, spec: HpaSpec) -> pd.DataFrame:
    """Recompute every logged decision with :class:`labutils.kube.hpa.Autoscaler` from its inputs.

    Adds ``replayed_metric_replicas`` and ``replayed_desired_replicas``. On a cluster's rows
    (no per-sync inputs) both are NaN and ``attrs["not_checkable"]`` says why.
    """
    if not _inputs_observed(log):
        out = log.assign(replayed_metric_replicas=math.nan, replayed_desired_replicas=math.nan)
        out.attrs["not_checkable"] = _NOT_OBSERVABLE
        return out
    scaler = Autoscaler(spec)
    metric: list[float] = []
    desired: list[int] = []
    for _, row in log.iterrows():
        usage = float(row["usage"]) if not pd.isna(row["usage"]) else None
        pods = int(row["ready_pods"]) if not pd.isna(row["ready_pods"]) else 0
        samples = _samples(row, usage, pods) if usage is not None else {str(row["metric"]): []}
        decision = scaler.sync(float(row["time_s"]), int(row["current_replicas"]), samples)
        chosen = decision.metric_replicas
        metric.append(math.nan if chosen is None else float(chosen))
        desired.append(decision.desired_replicas)
    return log.assign(replayed_metric_replicas=metric, replayed_desired_replicas=desired)


def what_if(
    log: pd.DataFrame, spec: HpaSpec, behaviors: Mapping[str, Behavior | None]
) -> pd.DataFrame:
    """Replicas over time under other ``behavior`` policies, on the same recorded queue.

    The recorded total queue (average x ready groups) at each sync is divided over the
    replicas the alternative policy would have had (all counted ready). This isolates what
    the policy decides; it does not model that extra groups would also shorten the queue.

    Returns:
        Long frame: time_s, policy, replicas (after the sync), per_group_queue; empty on a
        cluster's rows (the recorded queue per sync is not observable there).
    """
    rows: list[dict[str, Any]] = []
    columns = ["time_s", "policy", "replicas", "per_group_queue"]
    if not _inputs_observed(log):
        return pd.DataFrame(rows, columns=columns)
    for label, behavior in behaviors.items():
        scaler = Autoscaler(with_behavior(spec, behavior))
        replicas = int(log["current_replicas"].iloc[0])
        for _, row in log.iterrows():
            total = float(row["usage"]) * float(row["ready_pods"])
            if math.isnan(total):
                continue
            average = total / max(replicas, 1)
            samples = {str(row["metric"]): [PodSample(f"g{i}", average) for i in range(replicas)]}
            decision = scaler.sync(float(row["time_s"]), replicas, samples)
            replicas = decision.desired_replicas
            rows.append({"time_s": row["time_s"], "policy": label, "replicas": replicas,
                         "per_group_queue": average})  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def what_if_summary(frame: pd.DataFrame, *, start_s: float) -> pd.DataFrame:
    """Per policy: first scale-up and first scale-down (s after ``start_s``), peak, group-hours."""
    if frame.empty:
        warnings.warn(f"what-if: no recorded queue to replay ({_NOT_OBSERVABLE})", stacklevel=2)
    rows = []
    for policy, part in frame.groupby("policy", sort=False):
        t = part["time_s"].to_numpy(float)
        r = part["replicas"].to_numpy(int)
        first = int(r[0])
        up = t[r > first]
        peak_at = int(np.argmax(r))
        down = t[peak_at:][r[peak_at:] < r.max()]
        group_s = float(np.sum(r[:-1] * np.diff(t))) if len(t) > 1 else 0.0
        rows.append({
            "policy": policy,
            "first scale-up (s)": round(up[0] - start_s, 1) if up.size else np.nan,
            "peak groups": int(r.max()),
            "first scale-down (s)": round(down[0] - start_s, 1) if down.size else np.nan,
            "group-seconds": round(group_s, 1),
        })  # fmt: skip
    columns = ["policy", "first scale-up (s)", "peak groups", "first scale-down (s)",
               "group-seconds"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


# --- checks --------------------------------------------------------------------------------
def check_scaled_up(log: pd.DataFrame) -> str:
    """The HPA raised the replicas during the load step.

    Raises:
        ValidationError: no sync decided more replicas than it found.
    """
    ups = _ups(log)
    if ups.empty:
        peak = log["usage"].max()
        raise ValidationError(
            f"HPA never scaled up: peak {log['metric'].iloc[0]} {peak:.1f} per group vs target "
            f"{log['target'].iloc[0]:g}; raise step_rate_rps or step_duration_s"
        )
    first = ups.iloc[0]
    peak = int(log["desired_replicas"].max())
    if not _inputs_observed(log):
        before = "?" if pd.isna(first["current_replicas"]) else int(first["current_replicas"])
        return (
            f"OK: scaled up {len(ups)} times (rescale events), first {before} -> "
            f"{int(first['desired_replicas'])} ({first['reason']}); peak {peak} groups"
        )
    return (
        f"OK: scaled up {len(ups)} times, first {int(first['current_replicas'])} -> "
        f"{int(first['desired_replicas'])} at queue {first['usage']:.1f}/group "
        f"(target {first['target']:g}); peak {peak} groups"
    )


def check_scale_down_after_window(log: pd.DataFrame, spec: HpaSpec, *, slack_s: float = 0.5) -> str:
    """The first scale-down came no earlier than the scale-down window after the last sync
    that recommended at least the replicas it removed.

    Raises:
        ValidationError: no scale-down was logged, or it came too early.
    """
    behavior = spec.behavior or Behavior()
    window = behavior.scale_down.stabilization_window_s
    window_s = 300.0 if window is None else window
    downs = _downs(log)
    if downs.empty:
        raise ValidationError(
            f"HPA {spec.name} did not scale down within the watch; watch longer than the "
            f"{window_s:g} s window (settle_s)"
        )
    first = downs.iloc[0]
    if not _inputs_observed(log):
        return _check_down_from_events(log, first, spec.name, window_s, slack_s)
    before = log[(log["time_s"] < first["time_s"])
                 & (log["metric_replicas"] >= first["current_replicas"])]  # fmt: skip
    if before.empty:
        return "OK: scale-down without an earlier higher recommendation"
    waited_s = float(first["time_s"] - before["time_s"].max())
    if waited_s + slack_s < window_s:
        raise ValidationError(
            f"HPA {spec.name} scaled down {waited_s:.1f} s after the last high recommendation, "
            f"inside its {window_s:g} s stabilization window"
        )
    current = int(first["current_replicas"])
    return (
        f"OK: first scale-down {current} -> {int(first['desired_replicas'])} came "
        f"{waited_s:.1f} s after the last recommendation for {current}+ groups "
        f"(window {window_s:g} s)"
    )


def _check_down_from_events(
    log: pd.DataFrame, first: Any, name: str, window_s: float, slack_s: float
) -> str:
    # Without the recommendations, the last scale-up is the latest moment known to have
    # recommended more groups: the window must have passed since then (a necessary condition).
    ups = _ups(log)
    ups = ups[ups["time_s"] < first["time_s"]]
    if ups.empty:
        return (
            f"not checkable on eks: a scale-down to {int(first['desired_replicas'])} but no "
            f"earlier scale-up to time the {window_s:g} s window from (the HPA's "
            "recommendations are not kept by the Kubernetes API)"
        )
    waited_s = float(first["time_s"] - ups["time_s"].max())
    if waited_s + slack_s < window_s:
        raise ValidationError(
            f"HPA {name} scaled down {waited_s:.1f} s after its last scale-up (event), inside "
            f"its {window_s:g} s stabilization window"
        )
    return (
        f"OK: first scale-down to {int(first['desired_replicas'])} came {waited_s:.1f} s after "
        f"the last scale-up (window {window_s:g} s; rescale events only, the recommendations "
        "in between are not observable on eks)"
    )


def check_decisions_match(replayed: pd.DataFrame) -> str:
    """Every logged decision equals :mod:`labutils.kube.hpa` recomputed from its logged inputs.

    On a cluster's rows it returns "not checkable on eks: ..." (no inputs to recompute from).

    Raises:
        ValidationError: naming the first sync that differs.
    """
    if "not_checkable" in replayed.attrs or not _inputs_observed(replayed):
        return str(replayed.attrs.get("not_checkable", _NOT_OBSERVABLE))
    differ = replayed[replayed["replayed_desired_replicas"] != replayed["desired_replicas"]]
    if not differ.empty:
        row = differ.iloc[0]
        raise ValidationError(
            f"{len(differ)} of {len(replayed)} HPA decisions differ from labutils.kube.hpa; first "
            "at "
            f"time {row['time_s']:.1f}: logged {row['desired_replicas']}, recomputed "
            f"{row['replayed_desired_replicas']}"
        )
    return f"OK: all {len(replayed)} logged decisions recomputed identically by labutils.kube.hpa"


def check_what_if_by_hand(by_hand: pd.DataFrame, library: pd.DataFrame) -> str:
    """A replay written in the notebook decides what :func:`what_if` decides, sync by sync.

    Args:
        by_hand: long frame ``policy``, ``time_s``, ``replicas`` from the notebook's loop.
        library: :func:`what_if` over the same log (policies matched by name).

    Returns:
        ``"not checkable ..."`` when the log had no per-sync inputs (a cluster's).

    Raises:
        ValidationError: no policy in common, or the first sync where the replicas differ.
    """
    if library.empty and by_hand.empty:
        return f"not checkable: {_NOT_OBSERVABLE}"
    common = [p for p in by_hand["policy"].unique() if p in set(library["policy"])]
    if not common:
        raise ValidationError(
            f"no policy computed both by hand ({sorted(by_hand['policy'].unique())}) and by "
            f"what_if ({sorted(library['policy'].unique())}); name them alike"
        )
    for policy in common:
        mine = by_hand[by_hand["policy"].eq(policy)].set_index("time_s")["replicas"]
        ref = library[library["policy"].eq(policy)].set_index("time_s")["replicas"]
        if list(mine.index) != list(ref.index):
            raise ValidationError(
                f"{policy}: {len(mine)} syncs by hand, {len(ref)} in what_if (skip the same rows)"
            )
        differ = mine[mine.to_numpy() != ref.to_numpy()]
        if not differ.empty:
            t = differ.index[0]
            raise ValidationError(
                f"{policy}: at time {t:.1f} the loop by hand has {int(mine[t])} replicas, "
                f"labutils.kube.hpa {int(ref[t])} ({int((mine != ref).sum())} syncs differ)"
            )
    return f"OK: {', '.join(common)}: every sync by hand equals labutils.kube.hpa"


def _pairs(mapping: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (mapping or {}).items())


# --- nodes ---------------------------------------------------------------------------------
def node_pool_settings(rendered_dir: str | Path, zone: str) -> pd.DataFrame:
    """The zone's Karpenter NodePool and EC2NodeClass fields that decide which nodes appear."""
    folder = Path(rendered_dir) / "zones" / zone
    objs = {o.kind: o.data for o in load_objects(folder / "karpenter.yaml")}
    pool, node_class = objs.get("NodePool"), objs.get("EC2NodeClass")
    if pool is None or node_class is None:
        raise ConfigError(f"{folder}/karpenter.yaml: needs a NodePool and an EC2NodeClass")
    spec = pool["spec"]
    template = spec["template"]["spec"]
    rows = [("NodePool", "name", pool["metadata"]["name"])]
    for req in template.get("requirements") or []:
        values = ", ".join(map(str, req.get("values") or []))
        rows.append(("NodePool", f"requirement {req['key']}", f"{req['operator']} {values}"))
    ncs = node_class["spec"]
    taints = [f"{t['key']}:{t['effect']}" for t in template.get("taints") or []]
    subnets = [f"{k}={v}" for t in ncs.get("subnetSelectorTerms") or [] for k, v in
               (t.get("tags") or {}).items()]  # fmt: skip
    rows += [
        ("NodePool", "taints", ", ".join(taints)),
        ("NodePool", "limits", _pairs(spec.get("limits"))),
        ("NodePool", "disruption", _pairs(spec.get("disruption"))),
        ("NodePool", "expireAfter", str(template.get("expireAfter", ""))),
        ("EC2NodeClass", "name", node_class["metadata"]["name"]),
        ("EC2NodeClass", "AMI", ", ".join(str(a.get("alias", a))
                                          for a in ncs.get("amiSelectorTerms") or [])),
        ("EC2NodeClass", "role", str(ncs.get("role", ""))),
        ("EC2NodeClass", "subnets by tag", ", ".join(subnets)),
        ("EC2NodeClass", "metadataOptions", _pairs(ncs.get("metadataOptions"))),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["object", "field", "value"])


def gpu_nodes_needed(rendered_dir: str | Path, zone: str, replicas: Sequence[int]) -> pd.DataFrame:
    """GPU nodes Karpenter must provide for each replica count of the zone's LWS.

    A group is ``size`` pods (leader + workers), each requesting ``nvidia.com/gpu`` GPUs; a node
    of the NodePool's instance type holds ``floor(node GPUs / pod GPUs)`` such pods. The
    NodePool's GPU limit caps what Karpenter may buy.
    """
    lws = _object(rendered_dir, "LeaderWorkerSet", zone)
    template = lws["spec"]["leaderWorkerTemplate"]
    size = int(template.get("size", 1))
    pod = template.get("leaderTemplate") or template["workerTemplate"]
    node_type = pod["spec"]["nodeSelector"][INSTANCE_TYPE_LABEL]
    container = pod["spec"]["containers"][0]
    pod_gpus = int(container["resources"]["limits"][GPU_RESOURCE])
    node = catalog.instance_type(node_type)
    pods_per_node = node.gpus // pod_gpus if pod_gpus else 0
    if pods_per_node < 1:
        raise ConfigError(f"{zone}: a pod asks {pod_gpus} GPUs, {node_type} has {node.gpus}")
    pool = {
        o.kind: o.data for o in load_objects(Path(rendered_dir) / "zones" / zone / "karpenter.yaml")
    }
    limit = int(str(pool["NodePool"]["spec"].get("limits", {}).get(GPU_RESOURCE, "0")) or 0)
    rows = []
    for count in (int(r) for r in replicas):
        pods = count * size
        nodes = math.ceil(pods / pods_per_node)
        rows.append({
            "groups": count, "pods (leader+workers)": pods, "GPUs": pods * pod_gpus,
            "instance type": node_type, "GPU nodes": nodes, "NodePool GPU limit": limit,
            "within limit": pods * pod_gpus <= limit,
        })  # fmt: skip
    return pd.DataFrame(rows)
