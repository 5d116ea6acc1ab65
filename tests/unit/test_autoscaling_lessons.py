"""labutils.lessons.n04_autoscaling: drill manifests, decision replay, what-if policies, GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labutils.errors import ConfigError, ValidationError
from labutils.kube.hpa import Autoscaler, Behavior, PodSample, ScalingRules
from labutils.lessons import n04_autoscaling as autoscaling

ZONE = "us-west-2a"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("rendered")
    lab = autoscaling.drill_manifests(zones=[ZONE], out_dir=base / "lab")
    drill = autoscaling.drill_manifests(zones=[ZONE], hpa_time_scale=0.05, out_dir=base / "x")
    return lab, drill


def test_drill_manifests_scale_only_the_behavior(dirs: tuple[Path, Path]) -> None:
    lab, drill = (autoscaling.hpa_spec(d, ZONE) for d in dirs)
    assert lab.behavior and drill.behavior
    assert lab.behavior.scale_down.stabilization_window_s == 300
    assert drill.behavior.scale_down.stabilization_window_s == 15
    assert [p.period_s for p in drill.behavior.scale_up.policies] == [3.0]
    assert (drill.metrics, drill.min_replicas, drill.max_replicas) == (
        lab.metrics, lab.min_replicas, lab.max_replicas)  # fmt: skip
    table = autoscaling.hpa_settings(*dirs, ZONE, drill_sync_period_s=1.0)
    assert table.loc["scaleDown window"].tolist() == ["300 s", "15 s"]
    assert table.loc["sync period"].tolist() == ["15 s", "1 s"]
    with pytest.raises(ConfigError, match=r"not in lab\.yaml"):
        autoscaling.drill_manifests(zones=["mars-1a"], out_dir=dirs[0].parent / "bad")


class _LoggingBackend:
    """Logs decisions like the twin's controller: Autoscaler.sync(...).to_row() per sync."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def hpa_events(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _step_log(spec: Any) -> list[dict[str, Any]]:
    """A queue step: high queue, a new group loading (no metric yet), then idle."""
    scaler = Autoscaler(spec)
    metric = spec.metrics[0].name
    replicas, rows = 1, []
    for sync in range(40):
        now_s = 1000.0 + sync
        queue = 12.0 if sync < 10 else 0.0
        pods = [PodSample(f"g{i}", queue) for i in range(replicas)]
        if 0 < sync < 10 and replicas > 1:
            pods[-1] = PodSample(pods[-1].name, None, ready=False)  # the newest group is loading
        decision = scaler.sync(now_s, replicas, {metric: pods})
        rows.append({"kind": "hpa", "object": spec.name, **decision.to_row()})
        replicas = decision.desired_replicas
    return rows


def test_replay_reproduces_the_log_and_catches_a_wrong_decision(dirs: tuple[Path, Path]) -> None:
    spec = autoscaling.hpa_spec(dirs[1], ZONE)
    log = autoscaling.decisions(_LoggingBackend(_step_log(spec)), since_s=1000.0)
    assert log["missing_pods"].max() == 1  # the loading group was logged as missing
    assert "OK" in autoscaling.check_decisions_match(autoscaling.replay(log, spec))
    assert "OK" in autoscaling.check_scaled_up(log)
    assert "window 15 s" in autoscaling.check_scale_down_after_window(log, spec)
    tampered = log.copy()
    tampered.loc[3, "desired_replicas"] += 1
    with pytest.raises(ValidationError, match=r"differ from labutils\.kube\.hpa"):
        autoscaling.check_decisions_match(autoscaling.replay(tampered, spec))
    idle = log.assign(usage=0.0, desired_replicas=log["current_replicas"])
    with pytest.raises(ValidationError, match="never scaled up"):
        autoscaling.check_scaled_up(idle)


def test_scale_down_inside_the_window_fails(dirs: tuple[Path, Path]) -> None:
    spec = autoscaling.hpa_spec(dirs[1], ZONE)
    log = pd.DataFrame({
        "time_s": [0.0, 1.0, 2.0], "current_replicas": [1, 2, 2],
        "metric_replicas": [2, 2, 1], "desired_replicas": [2, 2, 1],
    })  # fmt: skip
    with pytest.raises(ValidationError, match="inside its 15 s stabilization window"):
        autoscaling.check_scale_down_after_window(log, spec)


def test_what_if_without_window_scales_down_sooner(dirs: tuple[Path, Path]) -> None:
    spec = autoscaling.hpa_spec(dirs[1], ZONE)
    log = autoscaling.decisions(_LoggingBackend(_step_log(spec)))
    deployed = spec.behavior or Behavior()
    frame = autoscaling.what_if(log, spec, {
        "deployed": deployed,
        "no window": Behavior(deployed.scale_up, ScalingRules(0.0, "Max",
                                                              deployed.scale_down.policies)),
    })  # fmt: skip
    summary = autoscaling.what_if_summary(frame, start_s=1000.0).set_index("policy")
    assert summary.loc["no window", "first scale-down (s)"] < summary.loc[
        "deployed", "first scale-down (s)"]  # fmt: skip
    assert summary.loc["deployed", "peak groups"] >= 2


def test_gpu_nodes_and_node_pool(dirs: tuple[Path, Path]) -> None:
    nodes = autoscaling.gpu_nodes_needed(dirs[1], ZONE, [1, 3, 5]).set_index("groups")
    # 70B on g5.12xlarge: a group is 2 pods of 4 GPUs, one pod per node; NodePool limit 32 GPUs
    assert nodes["GPU nodes"].tolist() == [2, 6, 10]
    assert nodes["within limit"].tolist() == [True, True, False]
    pool = autoscaling.node_pool_settings(dirs[1], ZONE).set_index("field")
    assert pool.loc["requirement node.kubernetes.io/instance-type", "value"] == "In g5.12xlarge"
    assert "metric name" in " ".join(autoscaling.adapter_rules(dirs[1]).columns)


def test_example_policies_and_helpers(dirs: tuple[Path, Path]) -> None:
    spec = autoscaling.hpa_spec(dirs[1], ZONE)
    policies = autoscaling.example_policies(spec, 0.05)
    assert policies["as deployed"] == spec.behavior
    assert policies["Kubernetes defaults"].scale_down.stabilization_window_s == 15  # 300 x 0.05
    assert [p.value for p in policies["aggressive up (2x step)"].scale_up.policies] == [2]
    assert policies["no scale-down window"].scale_down.stabilization_window_s == 0
    status = pd.DataFrame({"lws": [spec.target_name], "replicas": [spec.min_replicas]})
    assert autoscaling.back_at_min(spec)(status)
    assert not autoscaling.back_at_min(spec)(status.assign(replicas=3))
    log = pd.DataFrame({"current_replicas": [1, 2, 3], "desired_replicas": [2, 3, 2]})
    assert autoscaling.replica_counts(log) == [1, 2, 3]


def test_what_if_by_hand_check_compares_every_sync(dirs: tuple[Path, Path]) -> None:
    spec = autoscaling.hpa_spec(dirs[1], ZONE)
    log = autoscaling.decisions(_LoggingBackend(_step_log(spec)))
    library = autoscaling.what_if(log, spec, autoscaling.example_policies(spec, 0.05))
    mine = library[library["policy"].isin(["as deployed", "no scale-down window"])].copy()
    assert "as deployed, no scale-down window" in autoscaling.check_what_if_by_hand(mine, library)
    wrong = mine.copy()
    wrong.loc[wrong.index[5], "replicas"] += 1
    with pytest.raises(ValidationError, match=r"loop by hand has \d+ replicas"):
        autoscaling.check_what_if_by_hand(wrong, library)
    with pytest.raises(ValidationError, match="syncs by hand"):
        autoscaling.check_what_if_by_hand(mine.iloc[1:], library)
    with pytest.raises(ValidationError, match="name them alike"):
        autoscaling.check_what_if_by_hand(mine.assign(policy="mine"), library)
    empty = pd.DataFrame(columns=["time_s", "policy", "replicas"])
    assert autoscaling.check_what_if_by_hand(empty, empty).startswith("not checkable")


def test_drill_backend_scrapes_as_often_as_the_hpa_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))  # nothing is started: options only
    backend = autoscaling.drill_backend("local", sync_period_s=1.0)
    assert backend.options.scrape_interval_s == 1.0  # type: ignore[attr-defined]
    slower = autoscaling.drill_backend("local", sync_period_s=1.0, scrape_interval_s=2.0)
    assert slower.options.scrape_interval_s == 2.0  # type: ignore[attr-defined]
