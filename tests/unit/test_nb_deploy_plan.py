"""What notebooks 00/01 show from the rendered manifests, and the checks that guard the lessons."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from labutils import figures
from labutils.config import LabConfig
from labutils.errors import ManifestError, ValidationError
from labutils.lessons import n01_deploy as deploy
from labutils.manifests import plan, render

ZONES = ("us-west-2a", "us-west-2b")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(LabConfig(zones=ZONES, replicas=3), out)
    return out


def test_plan_lists_every_applied_object_per_zone(rendered: Path) -> None:
    table = plan.deployment_plan(rendered)
    lws = table[table["kind"] == "LeaderWorkerSet"].set_index("zone")
    assert sorted(lws.index) == list(ZONES)
    # 3 groups x PP 2 pods x TP 4 GPUs (lab defaults) read back from the rendered YAML
    assert lws.loc["us-west-2a", "replicas"] == "3"
    assert int(lws.loc["us-west-2a", "gpus"]) == 3 * 2 * 4
    assert "ScaledObject" not in set(table["kind"])  # optional/ is never applied
    svc = table[(table["kind"] == "Service") & (table["zone"] == "us-west-2b")]
    assert "worker-index=0" in svc["detail"].iloc[0]
    assert set(table[table["zone"] == "(all)"]["kind"]) >= {"HTTPRoute", "Gateway", "Namespace"}
    assert figures.plot_plan(table).axes[0].get_ylabel().startswith("GPUs")


def test_summary_says_simulated_only_on_local(rendered: Path) -> None:
    local = deploy.lab_summary(rendered, "local").set_index("what")["value"]
    eks = deploy.lab_summary(rendered, "eks").set_index("what")["value"]
    assert "SIMULATED A10G" in local["engines"]
    assert "SIMULATED" not in eks["engines"] and "vllm/vllm-openai" in eks["engines"]
    assert local["groups (LWS replicas) in all zones"] == "6"
    assert local["model"] == "meta-llama/Llama-3.1-70B-Instruct"


def test_templates_and_serve_command_show_leader_worker_split(rendered: Path) -> None:
    diff = plan.lws_templates(rendered, "us-west-2b")
    assert (diff["leader"] != diff["worker"]).all()
    assert any("readinessProbe" in f for f in diff["field"])
    full = plan.lws_templates(rendered, only_differences=False)
    assert len(full) > len(diff)
    cmd = plan.serve_command(rendered).set_index("flag")
    assert cmd.loc["--headless", "leader"] == "False" and cmd.loc["--headless", "worker"] == "True"
    assert cmd.loc["--node-rank", "leader"] == "0"
    assert cmd.loc["--node-rank", "worker"] == "$(LWS_WORKER_INDEX)"
    with pytest.raises(ManifestError, match="us-west-2a, us-west-2b"):
        plan.serve_command(rendered, "eu-west-1a")


def test_parallel_layout_check_catches_a_mismatch(rendered: Path, tmp_path: Path) -> None:
    layout = deploy.check_parallel_layout(plan.parallel_layout(rendered))
    assert (layout["gpus_per_group"] == layout["tp_x_pp"]).all()
    broken = layout.copy()
    broken.loc[0, "holds"] = False
    with pytest.raises(ValidationError, match="vllm-us-west-2a"):
        deploy.check_parallel_layout(broken)
    placement = plan.zone_placement(rendered).set_index("lws")
    assert placement.loc["vllm-us-west-2b", "required_node_zone"] == "us-west-2b"
    assert placement.loc["vllm-us-west-2b", "model_cache_pvc"] == "vllm-models-us-west-2b"


def _pods(zones: tuple[str, ...], groups: int, size: int) -> pd.DataFrame:
    rows = []
    for zone in zones:
        for g in range(groups):
            for w in range(size):
                group = f"vllm-{zone}-{g}"
                rows.append({"zone": zone, "lws": f"vllm-{zone}", "group": group,
                             "pod": group if w == 0 else f"{group}-{w}",
                             "role": "leader" if w == 0 else "worker", "ready": True})  # fmt: skip
    return pd.DataFrame(rows)


def test_service_selects_leaders_only_and_check_flags_a_bad_selector(
    rendered: Path, tmp_path: Path
) -> None:
    pods = _pods(ZONES, 3, 2)
    selection = deploy.check_leader_only_service(plan.service_selection(rendered, pods))
    assert set(selection[selection["role"] == "worker"]["selected_by"]) == {"(none)"}
    assert set(selection[selection["role"] == "leader"]["selected_by"]) == {
        f"vllm-{z}-api" for z in ZONES
    }
    # The seed's mistake: a Service selecting every LWS pod (no worker-index) routes to workers.
    bad = tmp_path / "bad"
    render(LabConfig(zones=ZONES), bad)
    svc_file = bad / "zones" / "us-west-2a" / "service.yaml"
    svc = yaml.safe_load(svc_file.read_text())
    del svc["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"]
    svc_file.write_text(yaml.safe_dump(svc))
    with pytest.raises(ValidationError, match="worker vllm-us-west-2a-0-1"):
        deploy.check_leader_only_service(plan.service_selection(bad, pods))


def _rollout(zones: tuple[str, ...], groups: int, ready: bool = True) -> deploy.Rollout:
    rows = [{"zone": z, "lws": f"vllm-{z}", "group": f"vllm-{z}-{g}", "pods": 2, "seen_s": 0.5,
             "ready_s": 3.0 + g if ready else float("nan")}
            for z in zones for g in range(groups)]  # fmt: skip
    return deploy.Rollout(pd.DataFrame(rows), len(zones) * 3, 0.4, 6.0, "local")


def test_group_count_check(rendered: Path) -> None:
    pods = _pods(ZONES, 3, 2)
    pods.loc[pods["pod"] == "vllm-us-west-2b-1-1", "ready"] = False
    per_zone = deploy.groups_per_zone(pods).set_index("zone")
    assert per_zone.loc["us-west-2a"].tolist() == [3, 3, 6]
    assert per_zone.loc["us-west-2b"].tolist() == [3, 2, 6]  # one worker not ready
    table = deploy.check_group_count(_rollout(ZONES, 3), rendered, _pods(ZONES, 3, 2))
    assert table["groups_ready_at_apply"].tolist() == [3, 3]
    with pytest.raises(ValidationError, match="2 groups ready at apply, rendered replicas 3"):
        deploy.check_group_count(_rollout(ZONES, 2), rendered, _pods(ZONES, 2, 2))
    with pytest.raises(ValidationError, match=r"groups with \[1\] pods, LWS size 2"):
        deploy.check_group_count(_rollout(ZONES, 3), rendered, _pods(ZONES, 3, 1))
    fig = figures.plot_rollout(_rollout(ZONES, 3))
    assert "SIMULATED" in fig.axes[0].get_title()


def test_available_check_names_the_lws() -> None:
    ok = pd.DataFrame([{"lws": "vllm-a", "replicas": 2, "ready_replicas": 2,
                        "conditions": "Available"}])  # fmt: skip
    assert deploy.check_available(ok) is ok
    eks_style = pd.DataFrame([{"lws": "vllm-b", "replicas": 2, "ready_replicas": 1,
                               "available": False, "conditions": "Progressing"}])  # fmt: skip
    with pytest.raises(ValidationError, match="vllm-b: 1/2 groups ready"):
        deploy.check_available(eks_style)
    with pytest.raises(ValidationError, match="apply the lab first"):
        deploy.check_available(pd.DataFrame(columns=["lws", "replicas", "ready_replicas"]))


def test_gpus_computed_by_hand_must_match_the_plan(rendered: Path) -> None:
    from labutils.lessons import n00_preflight as preflight

    table = plan.deployment_plan(rendered)
    limit = int(
        table[(table["kind"] == "NodePool") & (table["zone"] == "us-west-2a")]["gpus"].iloc[0]
    )
    gpus = pd.DataFrame(
        {"GPUs at start": [3 * 2 * 4] * 2, "GPUs at HPA max": [limit] * 2,
         "NodePool GPU limit": [limit] * 2},
        index=pd.Index(ZONES, name="zone"),
    )  # fmt: skip
    assert preflight.check_gpus_match_plan(gpus, table)["agrees with plan"].all()
    wrong = gpus.copy()
    wrong.loc["us-west-2b", "GPUs at start"] = 23
    with pytest.raises(ValidationError, match="us-west-2b: 23 GPUs at start, plan says 24"):
        preflight.check_gpus_match_plan(wrong, table)
    over = gpus.copy()
    over.loc["us-west-2a", "GPUs at HPA max"] = limit + 8
    with pytest.raises(ValidationError, match="NodePool allows"):
        preflight.check_gpus_match_plan(over, table)
    with pytest.raises(ValidationError, match="lacks"):
        preflight.check_gpus_match_plan(gpus.drop(columns="GPUs at HPA max"), table)
