"""A new twin group loads as long as a real GPU group starts (scaled), and the engine command
carries that time and the lab's calibration file."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from twin_fixtures import route, zone_objects

from labutils import catalog
from labutils.config import load_config
from labutils.errors import ConfigError, TwinError
from labutils.sim.perf import group_start_time_s
from labutils.targets.twin.backend import TwinBackend
from labutils.targets.twin.controller import _Controller, _Group
from labutils.targets.twin.options import INITIAL_GROUP_LOAD_S, TwinOptions
from labutils.targets.twin.spec import twin_spec_from_objects

CALIBRATION = (
    Path(__file__).resolve().parents[2] / "labutils/data/calibration/h200-llama-3.1-8b.json"
)


def _spec(objects: list[dict[str, Any]] | None = None) -> Any:
    objs = objects or zone_objects("us-west-2a", 1, {"minReplicas": 1, "maxReplicas": 3})
    return twin_spec_from_objects([*objs, route({"us-west-2a": 1})])


def _h200_8b_tp1_objects() -> list[dict[str, Any]]:
    objs = copy.deepcopy(zone_objects("us-west-2a", 1, None))
    pod = objs[0]["spec"]["leaderWorkerTemplate"]
    pod["size"] = 1
    pod["leaderTemplate"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] = (
        "p5en.48xlarge"
    )
    args = pod["leaderTemplate"]["spec"]["containers"][0]["args"]
    args[args.index("--tensor-parallel-size") + 1] = "1"
    args[args.index("--pipeline-parallel-size") + 1] = "1"
    return objs


def test_added_and_recreated_groups_take_a_real_groups_start_time_scaled() -> None:
    zone = _spec().zones[0]  # 8B on p5.48xlarge, 2 nodes per group
    model, instance = catalog.model(zone.engine.model), catalog.instance_type(zone.instance_type)
    options = TwinOptions(time_scale=0.05)
    added = group_start_time_s(model, instance, nodes=zone.size)
    recreated = group_start_time_s(
        model, instance, nodes=zone.size, node_launch=False, image_cached=True
    )
    assert options.group_load_s(zone, "initial") == INITIAL_GROUP_LOAD_S
    assert options.group_load_s(zone, "added") == pytest.approx(0.05 * added)
    assert options.group_load_s(zone, "recreated") == pytest.approx(0.05 * recreated)
    # nodes and image already there: a recreated group skips launch and pull
    assert recreated < added - 60
    # the same time at the twin's default factor: real GPU groups take minutes
    assert TwinOptions().group_load_s(zone, "added") == pytest.approx(added)
    assert added > 120
    # an explicit time is the override for every group (the tests' small values)
    fixed = TwinOptions(model_load_s=0.3, time_scale=0.05)
    assert {fixed.group_load_s(zone, k) for k in ("initial", "added", "recreated")} == {0.3}
    with pytest.raises(TwinError, match="group kind 'new'"):
        options.group_load_s(zone, "new")


def test_the_labs_70b_group_takes_minutes_and_a_drill_factor_shows_it_in_seconds() -> None:
    cfg = load_config()  # the lab's own deployment
    model, instance = catalog.model(cfg.model), catalog.instance_type(cfg.instance_type)
    real_s = group_start_time_s(model, instance, nodes=cfg.pipeline_parallel_size)
    assert 180 < real_s < 900  # several minutes: launch, pull, 141 GB of weights, warm-up
    zone = _spec().zones[0]
    big = dataclasses.replace(
        zone,
        instance_type=cfg.instance_type,
        size=cfg.pipeline_parallel_size,
        engine=dataclasses.replace(zone.engine, model=cfg.model),
    )
    drill = TwinOptions(time_scale=0.05)  # notebook 04's hpa_time_scale
    assert drill.group_load_s(big, "added") == pytest.approx(0.05 * real_s)


def test_engine_command_carries_the_groups_load_time_and_the_calibration(tmp_path: Path) -> None:
    spec = _spec()
    zone = spec.zones[0]
    options = TwinOptions(time_scale=0.1, engine_calibration="/cal/h200.json")
    controller = _Controller(spec, tmp_path, options)

    def load_arg(argv: list[str]) -> float:
        return float(argv[argv.index("--model-load-s") + 1])

    first = _Group(zone.zone, zone.lws, 0, initial=True)  # created by the first rollout
    assert load_arg(controller._engine_argv(zone, first)) == INITIAL_GROUP_LOAD_S
    group = _Group(zone.zone, zone.lws, 1)  # a scale-up after it
    argv = controller._engine_argv(zone, group)
    assert load_arg(argv) == pytest.approx(options.group_load_s(zone, "added"), abs=1e-3)
    assert group.load_s == pytest.approx(load_arg(argv), abs=1e-3)
    assert argv[-2:] == ["--calibration", "/cal/h200.json"]
    group.restarts = 1  # RecreateGroupOnPodRestart after the engine died
    assert load_arg(controller._engine_argv(zone, group)) == pytest.approx(
        options.group_load_s(zone, "recreated"), abs=1e-3
    )
    plain = _Controller(spec, tmp_path, TwinOptions(model_load_s=0.2))
    argv = plain._engine_argv(zone, _Group(zone.zone, zone.lws, 1))
    assert load_arg(argv) == 0.2 and "--calibration" not in argv


def test_lab_yaml_engine_calibration_is_a_path_relative_to_the_file(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("engine_calibration: cal/h200.json\n")
    assert load_config(lab).engine_calibration == str((tmp_path / "cal/h200.json").resolve())
    lab.write_text('engine_calibration: ""\n')
    assert load_config(lab).engine_calibration == ""
    lab.write_text("engine_calibration: [1]\n")
    with pytest.raises(ConfigError, match=r"lab\.yaml: 'engine_calibration' must be a file path"):
        load_config(lab)
    assert load_config().engine_calibration == ""  # the project's lab.yaml: the model


def test_twin_checks_the_calibration_against_every_zone(tmp_path: Path) -> None:
    wrong = TwinBackend(tmp_path / "a", engine_calibration=str(CALIBRATION))
    with pytest.raises(TwinError, match=r"is for llama-3\.1-8b on one h200, but vllm-us-west-2a "
                       r"runs llama-3\.1-8b on h100 at TP=4 PP=2"):  # fmt: skip
        wrong._calibration(_spec())
    assert wrong._calibration(_spec(_h200_8b_tp1_objects())) == str(CALIBRATION)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"gpu": "h200"}))
    with pytest.raises(TwinError, match=r"engine_calibration: calibration file .*broken\.json"):
        TwinBackend(tmp_path / "b", engine_calibration=str(broken))._calibration(_spec())
    # lab.yaml's key (empty in the project) applies to the simulated engine only
    assert TwinBackend(tmp_path / "c")._calibration(_spec()) == ""
    with pytest.raises(TwinError, match="applies to the simulated engine"):
        TwinBackend(tmp_path / "d", engine="vllm", engine_calibration=str(CALIBRATION))
