"""The EKS review's fixes (docs/eks-review.md) hold in the rendered manifests, and `labctl
validate` catches each one undone; lab.yaml's cluster settings and the zone-aware variant."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from labutils.config import load_config
from labutils.errors import ConfigError
from labutils.manifests import load_objects, render, validate
from labutils.manifests.settings import cluster_settings

ZONE = "us-west-2a"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(load_config(), out)
    return out


def _edit(root: Path, rel: str, change: Callable[[list[dict[str, Any]]], None]) -> None:
    path = root / rel
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    change(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _leader(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return docs[0]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]


def test_rendered_fleet_carries_the_fixes(rendered: Path) -> None:
    objs = {(o.kind, o.name): o.data for o in load_objects(rendered)}
    lws = objs[("LeaderWorkerSet", f"vllm-{ZONE}")]
    lwt = lws["spec"]["leaderWorkerTemplate"]
    assert lwt["restartPolicy"] == "RecreateGroupAfterStart"
    for role in ("leaderTemplate", "workerTemplate"):
        pod = lwt[role]
        assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["USER"] == env["LOGNAME"] == "vllm"
        assert env["TORCHINDUCTOR_CACHE_DIR"].startswith("/tmp/")
        assert env["VLLM_ENGINE_READY_TIMEOUT_S"] == "3600"
        args = container["args"]
        assert args[args.index("--distributed-timeout-seconds") + 1] == "3600"
    leader = lwt["leaderTemplate"]["spec"]
    c0 = leader["containers"][0]
    budget_s = c0["startupProbe"]["periodSeconds"] * c0["startupProbe"]["failureThreshold"]
    assert budget_s >= 3600
    sleep_s = c0["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_s = int(c0["args"][c0["args"].index("--shutdown-timeout") + 1])
    assert leader["terminationGracePeriodSeconds"] >= sleep_s + drain_s
    svc = objs[("Service", f"vllm-{ZONE}-api")]
    attrs = svc["metadata"]["annotations"][
        "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"
    ]
    assert attrs == "deregistration_delay.timeout_seconds=30"
    pool = objs[("NodePool", f"vllm-gpu-{ZONE}")]
    assert {"nodes": "0", "reasons": ["Drifted"]} in pool["spec"]["disruption"]["budgets"]
    assert pool["spec"]["template"]["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    node_class = objs[("EC2NodeClass", f"vllm-gpu-{ZONE}")]
    assert node_class["spec"]["amiSelectorTerms"] == [{"alias": "al2023@v20260714"}]
    assert objs[("PodMonitor", "vllm")]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    keda = objs[("ScaledObject", f"vllm-{ZONE}")]["spec"]["triggers"][0]
    assert keda["metadata"]["query"].startswith("sum(") and keda["metricType"] == "AverageValue"
    route = objs[("HTTPRoute", "vllm")]
    assert [m["path"]["value"] for m in route["spec"]["rules"][0]["matches"]] == ["/v1"]
    policy = objs[("BackendTrafficPolicy", "vllm")]["spec"]
    assert policy["targetRefs"][0]["name"] == "vllm"
    assert 503 in policy["retry"]["retryOn"]["httpStatusCodes"]
    assert policy["healthCheck"]["passive"]["maxEjectionPercent"] == 100


def _drop_env(name: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(docs: list[dict[str, Any]]) -> None:
        container = _leader(docs)["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] not in (name, "LOGNAME")]

    return change


def _set(path: tuple[Any, ...], value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def change(docs: list[dict[str, Any]]) -> None:
        node: Any = docs
        for key in path[:-1]:
            node = node[key]
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value

    return change


_LEADER = (0, "spec", "leaderWorkerTemplate", "leaderTemplate")
_LEADER_C = (*_LEADER, "spec", "containers", 0)
UNDONE = [
    ("user-env", f"zones/{ZONE}/lws.yaml", _drop_env("USER"), "has no /etc/passwd entry"),
    ("do-not-disrupt", f"zones/{ZONE}/lws.yaml", _set((*_LEADER, "metadata", "annotations"),
     None), "karpenter.sh/do-not-disrupt"),
    ("prestop", f"zones/{ZONE}/lws.yaml", _set((*_LEADER_C, "lifecycle"), None),
     "add a preStop sleep"),
    ("grace", f"zones/{ZONE}/lws.yaml", _set((*_LEADER, "spec", "terminationGracePeriodSeconds"),
     40), "exceeds terminationGracePeriodSeconds 40s"),
    ("ami-latest", f"zones/{ZONE}/karpenter.yaml", _set((1, "spec", "amiSelectorTerms"),
     [{"alias": "al2023@latest"}]), "drifts every node"),
    ("drift-budget", f"zones/{ZONE}/karpenter.yaml", _set((0, "spec", "disruption", "budgets"),
     None), 'nodes: "0", reasons: [Drifted]'),
    ("podmonitor-release", "monitoring/podmonitor.yaml", _set((0, "metadata", "labels",
     "release"), None), "add label release"),
    ("route-root", "gateway/httproute.yaml", _set((0, "spec", "rules", 0, "matches", 0, "path",
     "value"), "/"), "--api-key does not guard"),
    ("dereg-delay", f"zones/{ZONE}/service.yaml", _set((0, "metadata", "annotations",
     "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"), None),
     "deregistration delay 300s (default) exceeds"),
    ("policy-target", "gateway/backendtrafficpolicy.yaml", _set((0, "spec", "targetRefs", 0,
     "name"), "nope"), "applies to nothing"),
]  # fmt: skip


@pytest.mark.parametrize("case", UNDONE, ids=[c[0] for c in UNDONE])
def test_validate_catches_each_fix_undone(
    case: tuple[str, str, Callable[[list[dict[str, Any]]], None], str],
    rendered: Path,
    tmp_path: Path,
) -> None:
    _, rel, change, message = case
    root = tmp_path / "broken"
    shutil.copytree(rendered, root)
    _edit(root, rel, change)
    problems = [str(p) for p in validate(root)]
    assert any(message in p and rel in p for p in problems), problems


def test_validate_catches_keda_avg_and_a_short_distributed_timeout(tmp_path: Path) -> None:
    root = tmp_path / "r"
    render(load_config(), root)

    def avg(docs: list[dict[str, Any]]) -> None:
        trigger = docs[0]["spec"]["triggers"][0]
        trigger["metadata"]["query"] = trigger["metadata"]["query"].replace("sum(", "avg(", 1)

    def no_timeout(docs: list[dict[str, Any]]) -> None:
        args = _leader(docs)["spec"]["containers"][0]["args"]
        i = args.index("--distributed-timeout-seconds")
        del args[i : i + 2]

    # a ScaledObject in a zone folder is checked like the others (optional/ is not applied)
    shutil.copy(root / f"optional/keda/scaledobject-{ZONE}.yaml", tmp_path / "so.yaml")
    _edit(tmp_path, "so.yaml", avg)
    assert any("divided by the replicas twice" in str(p) for p in validate(tmp_path / "so.yaml"))
    _edit(root, f"zones/{ZONE}/lws.yaml", no_timeout)
    assert any("torch.distributed gives up after 600s" in str(p) for p in validate(root))


def test_zone_aware_failover_renders_one_backend_with_zone_weights(tmp_path: Path) -> None:
    base = load_config()
    cfg = dataclasses.replace(
        base,
        route_weights={"us-west-2a": 70, "us-west-2b": 30, "us-west-2c": 0},
        extra={**base.extra, "gateway": {**base.extra["gateway"], "failover": "zone-aware"}},
    )
    render(cfg, tmp_path)
    assert validate(tmp_path) == []
    objs = {(o.kind, o.name): o.data for o in load_objects(tmp_path)}
    refs = objs[("HTTPRoute", "vllm")]["spec"]["rules"][0]["backendRefs"]
    assert [r["name"] for r in refs] == ["vllm-api"]
    zones = objs[("BackendTrafficPolicy", "vllm")]["spec"]["loadBalancer"]["zoneAware"]
    assert {z["zone"]: z["weight"] for z in zones["weightedZones"]} == {
        "us-west-2a": 70, "us-west-2b": 30, "us-west-2c": 0
    }  # fmt: skip
    selector = objs[("Service", "vllm-api")]["spec"]["selector"]
    assert selector == {"app.kubernetes.io/name": "vllm",
                        "leaderworkerset.sigs.k8s.io/worker-index": "0"}  # fmt: skip


def test_cluster_settings_come_from_lab_yaml_and_refuse_bad_values(tmp_path: Path) -> None:
    base = load_config()
    st = cluster_settings(base)
    assert (st.vpc_cidr, st.monitoring_namespace, st.profile) == (
        "10.0.0.0/16", "monitoring", "shared-fleet"
    )  # fmt: skip
    custom = dataclasses.replace(base, extra={
        **base.extra, "eks": {**base.extra["eks"], "vpc_cidr": "10.42.0.0/16"},
        "monitoring": {**base.extra["monitoring"], "namespace": "obs", "helm_release": "kps"},
    })  # fmt: skip
    render(custom, tmp_path)
    text = "\n".join(p.read_text() for p in tmp_path.rglob("*.yaml"))
    assert "10.42.0.0/16" in text and "10.0.0.0/16" not in text
    assert "kubernetes.io/metadata.name: obs" in text and "release: kps" in text
    for eks, message in (
        ({"karpenter_ami_alias": "al2023@latest"}, "must pin a release"),
        ({"vpc_cidr": "10.0.0.0/33"}, "is not a CIDR"),
        ({"nat_gateway": "Double"}, "HighlyAvailable or Single"),
    ):
        bad = dataclasses.replace(base, extra={**base.extra, "eks": {**base.extra["eks"], **eks}})
        with pytest.raises(ConfigError, match=message):
            cluster_settings(bad)
    with pytest.raises(ConfigError, match=r"gateway\.failover"):
        cluster_settings(dataclasses.replace(base, extra={**base.extra,
                         "gateway": {"failover": "round-robin"}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"--namespace 'P07'"):
        render(base, tmp_path / "x", namespace="P07")


def test_per_participant_profile_renders_the_small_fleet(tmp_path: Path) -> None:
    base = load_config()
    cfg = dataclasses.replace(base, extra={**base.extra, "profile": "per-participant"})
    render(cfg, tmp_path, namespace="p03")
    assert validate(tmp_path) == []
    objs = {(o.kind, o.name): o.data for o in load_objects(tmp_path)}
    lws = objs[("LeaderWorkerSet", f"vllm-{ZONE}")]
    args = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["args"]
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct" and lws["spec"]["replicas"] == 1
    pool = objs[("NodePool", f"vllm-gpu-{ZONE}")]
    # sized for the room: participants.count x max_replicas x PP x GPUs per g5.2xlarge
    assert pool["spec"]["limits"]["nvidia.com/gpu"] == str(30 * 2 * 1 * 1)
    quota = objs[("ResourceQuota", "vllm-lab-gpu")]["spec"]["hard"]
    assert quota["requests.nvidia.com/gpu"] == str(3 * 2 * 1 * 1)


def test_render_namespace_cli_keeps_everything_in_that_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labutils.cli import main

    out = tmp_path / "p07"
    assert main(["render", "--out", str(out), "--namespace", "p07", "--participant"]) == 0
    assert "namespace p07" in capsys.readouterr().out
    assert main(["validate", str(out)]) == 0
    namespaces = {o.namespace for o in load_objects(out)}
    assert namespaces == {None, "p07"}  # cluster-scoped (Namespace, NodePools...) or p07
    scoped = {o.kind for o in load_objects(out) if o.namespace is None}
    assert scoped == {"Namespace", "NodePool", "EC2NodeClass"}  # as docs/eks-review.md lists
