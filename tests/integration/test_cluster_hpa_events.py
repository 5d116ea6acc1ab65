"""Notebook 04 on ``eks``: HPA status + rescale events read through the real ``kubernetes``
client from the fake API server, then the autoscaling lessons on those rows."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakekube import FakeKube
from fakekube.lab_objects import NAMESPACE, lab_objects

from labutils import figures
from labutils.config import LabConfig
from labutils.errors import ValidationError
from labutils.kube.hpa import hpa_spec_from_manifest
from labutils.lessons import n04_autoscaling as autoscaling
from labutils.targets.eks import EksBackend

ZONES = ("us-west-2a", "us-west-2b")
HPA = "vllm-us-west-2a"
METRIC = "vllm_num_requests_waiting"
UP = f"pods metric {METRIC} above target"
DOWN = "All metrics below target"


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKube]:
    with FakeKube(tmp_path, zones=ZONES) as server:
        yield server


def _stamp(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hpa_manifests() -> dict[str, dict[str, Any]]:
    found = {o["metadata"]["name"]: o for o in lab_objects(ZONES)}
    hpas = {n: o for n, o in found.items() if o["kind"] == "HorizontalPodAutoscaler"}
    for hpa in hpas.values():
        hpa["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 300}}
    return hpas


def _plant(kube: FakeKube, t0: float, down_after_up_s: float) -> dict[str, Any]:
    """Two HPAs with status; zone a scaled 1 -> 2 -> 3 -> 2, zone b once; unrelated events."""
    hpas = _hpa_manifests()
    stored = {}
    for name, hpa in hpas.items():
        obj = copy.deepcopy(hpa)
        obj["status"] = {
            "currentReplicas": 2,
            "desiredReplicas": 2,
            "lastScaleTime": _stamp(t0 + 70 + down_after_up_s),
            "currentMetrics": [
                {"type": "Pods", "pods": {"metric": {"name": METRIC},
                                          "current": {"averageValue": "3500m"}}}
            ],
            "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
                {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
                 "message": "the HPA was able to successfully calculate a replica count"},
                {"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange"},
            ],
        }  # fmt: skip
        stored[name] = kube.put("autoscaling", "horizontalpodautoscalers", NAMESPACE, obj)
    a, b = stored[HPA], stored["vllm-us-west-2b"]
    rescale = {"reason": "SuccessfulRescale", "component": "horizontal-pod-autoscaler"}
    # an earlier run's scale-down, still kept by the API (events live an hour)
    kube.record_event(NAMESPACE, a, message=f"New size: 1; reason: {DOWN}",
                      first_timestamp=_stamp(t0 - 600), **rescale)  # fmt: skip
    kube.record_event(NAMESPACE, a, message=f"New size: 2; reason: {UP}",
                      first_timestamp=_stamp(t0 + 10), **rescale)  # fmt: skip
    kube.record_event(NAMESPACE, a, message=f"New size: 3; reason: {UP}",
                      first_timestamp=_stamp(t0 + 70), **rescale)  # fmt: skip
    kube.record_event(NAMESPACE, a, message=f"New size: 2; reason: {DOWN}",
                      first_timestamp=_stamp(t0 + 70 + down_after_up_s), **rescale)  # fmt: skip
    kube.record_event(NAMESPACE, b, message=f"New size: 2; reason: {UP}",
                      first_timestamp=_stamp(t0 + 20), **rescale)  # fmt: skip
    # not rescales: filtered out by the field selector (reason / involved kind)
    kube.record_event(NAMESPACE, a, "FailedGetPodsMetric", "unable to get metric",
                      first_timestamp=_stamp(t0 + 5), etype="Warning")  # fmt: skip
    lws = {"kind": "LeaderWorkerSet", "metadata": {"name": HPA, "uid": "x"}}
    kube.record_event(NAMESPACE, lws, "SuccessfulRescale", "New size: 9; reason: made up",
                      first_timestamp=_stamp(t0 + 30))  # fmt: skip
    return hpas


def _backend(kube: FakeKube, tmp_path: Path) -> EksBackend:
    return EksBackend(kube.write_kubeconfig(), config=LabConfig(zones=ZONES), poll_s=0.05,
                      cache_dir=tmp_path / "discovery")  # fmt: skip


def test_decisions_and_checks_from_rescale_events(kube: FakeKube, tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 1000)
    hpas = _plant(kube, t0, down_after_up_s=330)
    backend = _backend(kube, tmp_path)

    events = backend.hpa_events()
    assert set(events["hpa"]) == {HPA, "vllm-us-west-2b"}
    assert "made up" not in " ".join(events["reason"])  # the LWS's event is not the HPA's
    log = autoscaling.decisions(backend, hpa=HPA, since_s=t0)
    assert list(log["source"]) == ["event SuccessfulRescale"] * 3 + ["status"]
    assert list(log["t_s"].iloc[:3]) == [10.0, 70.0, 400.0]
    assert list(log["desired_replicas"]) == [2, 3, 2, 2]
    # the earlier run's event is left out, but tells the size before this run's first rescale
    assert list(log["current_replicas"]) == [1, 2, 3, 2]
    assert (log["metric"] == METRIC).all() and (log["target"] == 5.0).all()
    assert log["usage"].iloc[-1] == pytest.approx(3.5)  # status.currentMetrics, "3500m"
    assert log["usage"].iloc[:3].isna().all()  # per-sync inputs: not exposed by the API
    assert log[["ready_pods", "metric_replicas", "stabilized_replicas"]].isna().all().all()
    assert log["reason"].iloc[-1].startswith("ValidMetricFound")

    up = autoscaling.check_scaled_up(log)
    assert up.startswith("OK: scaled up 2 times") and "1 -> 2" in up and "peak 3" in up
    spec = hpa_spec_from_manifest(hpas[HPA])
    down = autoscaling.check_scale_down_after_window(log, spec)
    assert "330.0 s after the last scale-up" in down and "window 300 s" in down

    replayed = autoscaling.replay(log, spec)
    verdict = autoscaling.check_decisions_match(replayed)
    assert verdict.startswith("not checkable on eks: ")
    assert replayed["replayed_desired_replicas"].isna().all()
    alternatives = autoscaling.what_if(log, spec, autoscaling.example_policies(spec))
    assert alternatives.empty
    with pytest.warns(UserWarning, match="not checkable on eks"):
        summary = autoscaling.what_if_summary(alternatives, start_s=t0)
    assert summary.empty and "peak groups" in summary.columns
    texts = [t.get_text() for t in figures.plot_what_if(alternatives, start_s=t0).axes[0].texts]
    assert texts == ["no recorded per-sync queue on this target"]
    assert autoscaling.replica_counts(log) == [1, 2, 3]


def test_scale_down_inside_the_window_fails_on_events(kube: FakeKube, tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 1000)
    hpas = _plant(kube, t0, down_after_up_s=100)
    log = autoscaling.decisions(_backend(kube, tmp_path), hpa=HPA, since_s=t0)
    with pytest.raises(ValidationError, match=r"100\.0 s after its last scale-up"):
        autoscaling.check_scale_down_after_window(log, hpa_spec_from_manifest(hpas[HPA]))


def test_aggregated_event_and_no_scale_up(kube: FakeKube, tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 1000)
    hpa = kube.put("autoscaling", "horizontalpodautoscalers", NAMESPACE, _hpa_manifests()[HPA])
    # the recorder folds a repeat into one Event: count 2, first and last timestamps
    kube.record_event(NAMESPACE, hpa, "SuccessfulRescale", f"New size: 1; reason: {DOWN}",
                      first_timestamp=_stamp(t0), last_timestamp=_stamp(t0 + 50),
                      count=2)  # fmt: skip
    log = autoscaling.decisions(_backend(kube, tmp_path), hpa=HPA, since_s=t0)
    assert list(log["t_s"].iloc[:2]) == [0.0, 50.0]
    assert math.isnan(log["current_replicas"].iloc[0])  # before the first event: unknown
    assert log["current_replicas"].isna().iloc[-1]  # no status yet: nothing invented
    with pytest.raises(ValidationError, match="never scaled up"):
        autoscaling.check_scaled_up(log)
    # a scale-down ("below target") with no scale-up before it: the window cannot be timed
    verdict = autoscaling.check_scale_down_after_window(log, hpa_spec_from_manifest(hpa))
    assert verdict.startswith("not checkable on eks: ") and "to 1" in verdict
