"""``labctl instructor``: plan arithmetic against the rendered manifests and the price file,
the eksctl ClusterConfig, the pinned add-ons (and that they create what the manifests name),
and the teardown order."""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from labutils import catalog
from labutils.cli.instructor import register
from labutils.config import load_config
from labutils.errors import ConfigError
from labutils.instructor import (
    addon_objects,
    addon_steps,
    cluster_config,
    plan_workshop,
    teardown_steps,
)
from labutils.instructor.addons import ToolError, apply_steps, format_steps
from labutils.instructor.plan import load_addons, load_line_items
from labutils.manifests import load_objects, render
from labutils.manifests.schemas import crd_source, schema_findings
from labutils.manifests.settings import profile_config


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="labctl")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    return capsys.readouterr().out


def _rendered(tmp_path: Path, profile: str) -> list[Any]:
    cfg = load_config()
    cfg = profile_config(cfg, profile)
    cfg = cfg.__class__(**{**cfg.__dict__, "extra": {**cfg.extra, "profile": profile}})
    out = tmp_path / profile
    render(cfg, out)
    return load_objects(out)


@pytest.mark.parametrize("profile", ["shared-fleet", "per-participant"])
def test_plan_arithmetic_matches_the_rendered_manifests_and_prices(
    profile: str, tmp_path: Path
) -> None:
    participants, hours = 30, 3.0
    plan = plan_workshop(participants, hours)[profile]
    objs = _rendered(tmp_path, profile)
    prices = catalog.load_prices()["usd_per_hour"]
    fleets = participants if profile == "per-participant" else 1
    total_nodes = total_max_nodes = 0
    for zone in plan.zones:
        (lws,) = [o for o in objs if o.kind == "LeaderWorkerSet" and zone.zone in o.name]
        (pool,) = [o for o in objs if o.kind == "NodePool" and zone.zone in o.name]
        (hpa,) = [o for o in objs if o.kind == "HorizontalPodAutoscaler" and zone.zone in o.name]
        size = lws.data["spec"]["leaderWorkerTemplate"]["size"]
        itype = lws.data["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["nodeSelector"][
            "node.kubernetes.io/instance-type"
        ]
        node = catalog.instance_type(itype)
        nodes = lws.data["spec"]["replicas"] * size * fleets
        max_nodes = hpa.data["spec"]["maxReplicas"] * size * fleets
        assert (zone.nodes, zone.gpus, zone.vcpus) == (nodes, nodes * node.gpus, nodes * node.vcpus)
        assert zone.max_gpus == max_nodes * node.gpus
        # the NodePool the instructor applies holds the HPA maximum of the planned room
        assert zone.nodepool_gpu_limit == int(pool.data["spec"]["limits"]["nvidia.com/gpu"])
        assert zone.max_gpus <= zone.nodepool_gpu_limit
        total_nodes += nodes
        total_max_nodes += max_nodes
    assert plan.quota["vcpus"] == total_max_nodes * node.vcpus
    assert plan.quota["code"] == "L-DB2E81BA"  # G and VT instances (g5)
    assert plan.gpu_hours == total_nodes * node.gpus * hours
    gpu_items = [i for i in plan.line_items if i["item"].startswith("GPU nodes")]
    assert [i["usd"] for i in gpu_items] == [
        round(total_nodes * hours * prices[itype], 2),
        round(total_max_nodes * hours * prices[itype], 2),
    ]
    # every line item: quantity x price from the file, with its source and date
    line = load_line_items()
    for item in plan.line_items:
        assert item["usd"] == round(item["quantity"] * item["usd_per_unit"], 2)
        assert item["source"]
        assert item["as_of"]
    units = {i["unit"] for i in plan.line_items}
    for key in ("nlb_hour", "nat_gateway_hour", "nat_gateway_gb", "efs_standard_gb_month"):
        assert line[key]["unit"] in units, key
    others = sum(i["usd"] for i in plan.line_items if i["at_max"] is None)
    assert math.isclose(plan.cost_usd, round(gpu_items[0]["usd"] + others, 2), abs_tol=0.011)


def test_plan_refuses_more_participants_than_the_nodepools_hold() -> None:
    config = load_config()
    assert config.extra["participants"]["count"] == 30
    with pytest.raises(ConfigError, match=r"NodePool vllm-gpu-us-west-2a allows 60.*count"):
        plan_workshop(31, 3, config=config)


def test_plan_json_cli_prints_quota_gpu_hours_cost_and_line_items(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run(["instructor", "plan", "--participants", "30", "--hours", "3", "--json"], capsys)
    data = json.loads(out)
    assert data["selected"] == "shared-fleet"
    for profile in ("shared-fleet", "per-participant"):
        plan = data["profiles"][profile]
        assert plan["quota"]["vcpus"] > 0 and plan["gpu_hours"]["baseline"] > 0
        assert plan["cost_usd"]["baseline"] < plan["cost_usd"]["max"]
        names = " ".join(i["item"] for i in plan["line_items"])
        for word in ("NLB", "NAT", "EFS", "EKS"):
            assert word in names
        assert all(i["source"] and i["as_of"] for i in plan["line_items"])
    assert "exceed the default quota" in data["profiles"]["per-participant"]["warnings"][0]
    text = _run(["instructor", "plan", "--participants", "4", "--hours", "2"], capsys)
    assert "(selected in lab.yaml)" in text and "quota to request" in text


def test_cluster_config_matches_what_the_manifests_expect(tmp_path: Path) -> None:
    config = load_config()
    doc = cluster_config(config)
    render(config, tmp_path)
    node_class = next(o for o in load_objects(tmp_path) if o.kind == "EC2NodeClass")
    discovery = node_class.data["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"]
    assert doc["metadata"]["tags"]["karpenter.sh/discovery"] == discovery
    assert f"KarpenterNodeRole-{config.cluster_name}" in doc["iamIdentityMappings"][0]["arn"]
    assert node_class.data["spec"]["role"] == f"KarpenterNodeRole-{config.cluster_name}"
    assert doc["availabilityZones"] == list(config.zones)
    assert doc["vpc"]["cidr"] == config.extra["eks"]["vpc_cidr"]
    cni = next(a for a in doc["addons"] if a["name"] == "vpc-cni")
    assert json.loads(cni["configurationValues"]) == {"enableNetworkPolicy": "true"}
    accounts = {s["metadata"]["name"]: s for s in doc["iam"]["serviceAccounts"]}
    assert accounts["aws-load-balancer-controller"]["wellKnownPolicies"] == {
        "awsLoadBalancerController": True
    }
    assert doc["iam"]["podIdentityAssociations"][0]["serviceAccountName"] == "karpenter"
    assert doc["managedNodeGroups"][0]["desiredCapacity"] >= 5  # 30 JupyterLabs + controllers


def test_cluster_config_cli_writes_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(["instructor", "cluster-config", "--out", str(tmp_path / "c.yaml")], capsys)
    assert "aws cloudformation deploy --stack-name Karpenter-vllm-lab" in out
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["kind"] == "ClusterConfig"


def test_addons_print_lists_each_addon_with_its_pinned_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run(["instructor", "addons", "--print"], capsys)
    pins = load_addons()["addons"]
    for key in ("karpenter", "lws", "envoy-gateway", "aws-load-balancer-controller",
                "nvidia-device-plugin", "kube-prometheus-stack", "prometheus-adapter"):  # fmt: skip
        assert f"--version {pins[key]['version']}" in out or (
            f"--version={pins[key]['version']}" in out
        ), key
    assert "crds.gatewayAPI.channel=standard" in out
    assert "fileSystemId: fs-REPLACE-ME" in out  # until lab.yaml eks.efs_file_system_id is set


def test_addons_create_what_the_manifests_name(tmp_path: Path) -> None:
    config = load_config()
    render(config, tmp_path)
    objs = load_objects(tmp_path)
    created = {(o["kind"], o["metadata"]["name"]): o for o in addon_objects(config)}
    (gateway,) = [o for o in objs if o.kind == "Gateway"]
    gateway_class = created[("GatewayClass", gateway.data["spec"]["gatewayClassName"])]
    ref = gateway_class["spec"]["parametersRef"]
    envoy = created[("EnvoyProxy", ref["name"])]
    notes = envoy["spec"]["provider"]["kubernetes"]["envoyService"]["annotations"]
    assert notes["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    for pvc in (o for o in objs if o.kind == "PersistentVolumeClaim"):
        storage = created[("StorageClass", pvc.data["spec"]["storageClassName"])]
        assert storage["provisioner"] == "efs.csi.aws.com"
        assert storage["parameters"]["uid"] == "10001"  # the vLLM pods' user owns the cache
    # the PodMonitor's release label is the kube-prometheus-stack release the addons install
    (monitor,) = [o for o in objs if o.kind == "PodMonitor"]
    steps = {s.name: s for s in addon_steps(config)}
    install = shlex.split(steps["kube-prometheus-stack"].commands[-1])
    assert install[:3] == ["helm", "upgrade", "--install"]
    assert install[3] == monitor.labels["release"]
    assert install[install.index("-n") + 1] == config.extra["monitoring"]["namespace"]
    # the lab's alert rules reach the chart's Prometheus (release label) and the dashboard its
    # Grafana sidecar (grafana_dashboard label), in the monitoring namespace
    lab_mon = {o["kind"]: o for o in steps["lab-monitoring"].objects}
    rule_meta = lab_mon["PrometheusRule"]["metadata"]
    assert rule_meta["labels"]["release"] == monitor.labels["release"]
    assert rule_meta["namespace"] == config.extra["monitoring"]["namespace"]
    assert lab_mon["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "kubectl apply --server-side" in steps["lab-monitoring"].commands[0]
    # prometheus-adapter gets exactly the rules the HPAs' metric names come from
    adapter = steps["prometheus-adapter"].commands[0]
    values = yaml.safe_load(adapter.split("<<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0])
    (rules_cm,) = [o for o in objs if o.kind == "ConfigMap" and "adapter" in o.name]
    assert (
        values["rules"]["custom"] == yaml.safe_load(rules_cm.data["data"]["config.yaml"])["rules"]
    )
    # and what the lab creates is valid against the vendored upstream schemas
    for obj in addon_objects(config):
        assert list(schema_findings(obj)) == [], obj["kind"]


def test_addon_versions_match_the_vendored_crd_schemas() -> None:
    pins = load_addons()["addons"]
    assert crd_source("LeaderWorkerSet")["tag"] == f"v{pins['lws']['version']}"
    assert crd_source("HTTPRoute")["tag"] == pins["gateway-api"]["version"]
    assert crd_source("BackendTrafficPolicy")["tag"] == pins["envoy-gateway"]["version"]
    assert crd_source("EnvoyProxy")["tag"] == pins["envoy-gateway"]["version"]
    assert crd_source("NodePool")["tag"] == f"v{pins['karpenter']['version']}"
    assert crd_source("ScaledObject")["tag"] == f"v{pins['keda']['version']}"
    assert crd_source("PodMonitor")["tag"] == pins["kube-prometheus-stack"]["operator_version"]
    for kind in ("LeaderWorkerSet", "HTTPRoute", "NodePool", "PodMonitor"):
        assert crd_source(kind)["license"] == "Apache-2.0"


def test_addons_apply_needs_its_tools_and_runs_in_order() -> None:
    steps = addon_steps(load_config())
    with pytest.raises(ToolError, match=r"needs .*helm.* on PATH"):
        apply_steps(steps, which=lambda tool: None if tool == "helm" else f"/usr/bin/{tool}")
    ran: list[str] = []

    class _Done:
        returncode = 0

    def runner(argv: list[str], check: bool) -> _Done:
        assert argv[:3] == ["bash", "-euo", "pipefail"]
        ran.append(argv[-1])
        return _Done()

    done = apply_steps(steps, runner=runner, which=lambda tool: f"/usr/bin/{tool}")
    assert done == [s.name for s in steps]
    assert ran.index(next(c for c in ran if "gateway-crds-helm" in c)) < ran.index(
        next(c for c in ran if "kind: GatewayClass" in c)
    )  # the CRDs before the GatewayClass


def test_teardown_order_strands_no_cloud_resource(capsys: pytest.CaptureFixture[str]) -> None:
    names = [s.name for s in teardown_steps(load_config())]
    assert names == [
        "lab objects and participants",
        "NLBs gone",
        "GPU nodes gone",
        "model caches gone",
        "add-ons",
        "EFS file system",
        "cluster",
        "Karpenter IAM",
    ]
    out = _run(["instructor", "teardown"], capsys)
    assert out.startswith("# dry run")
    first = {word: out.index(word) for word in (
        "labctl reset", "LoadBalancer", "nodeclaims", "helm uninstall aws-load-balancer-controller",
        "helm uninstall karpenter", "eksctl delete cluster")}  # fmt: skip
    assert list(first.values()) == sorted(first.values())
    assert re.search(r"exit 1", format_steps(teardown_steps(load_config())))
