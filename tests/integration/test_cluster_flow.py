"""The EKS path end to end against the stateful fake API server (real ``kubernetes`` client)."""

from __future__ import annotations

import json
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKube
from fakekube.engine_stub import engine_stub
from fakekube.lab_objects import NAMESPACE, PART_OF, lab_objects

from labutils.config import LabConfig
from labutils.errors import ClusterError
from labutils.protocol import Backend
from labutils.targets import get_backend
from labutils.targets.eks import EksBackend

ZONES = ("us-west-2a", "us-west-2b")
LWS = "leaderworkerset.x-k8s.io"


@pytest.fixture
def kube(tmp_path: Path, data_dir: Path) -> Iterator[FakeKube]:
    with (
        engine_stub(data_dir / "vllm-0.32.0-cpu-metrics.txt") as upstream,
        FakeKube(tmp_path, zones=ZONES, proxy_upstream=upstream) as server,
    ):
        yield server


def _backend(kube: FakeKube, tmp_path: Path) -> EksBackend:
    return EksBackend(
        kube.write_kubeconfig(),
        config=LabConfig(zones=ZONES),
        poll_s=0.05,
        cache_dir=tmp_path / "discovery",
    )


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # 127.0.0.1 only
        return response.status, response.read()


def test_apply_wait_groups_scale_endpoints_metrics_reset(
    kube: FakeKube, tmp_path: Path, data_dir: Path
) -> None:
    backend = _backend(kube, tmp_path)
    assert isinstance(backend, Backend)

    applied = backend.apply(objects=lab_objects(ZONES, replicas=1, size=2), timeout_s=20)
    assert set(applied["kind"]) >= {"Namespace", "LeaderWorkerSet", "Service", "HTTPRoute"}
    assert applied["kind"].iloc[0] == "Namespace"  # dependencies first
    lws = kube.get(LWS, "leaderworkersets", NAMESPACE, "vllm-us-west-2a")
    assert lws is not None
    entries = lws["metadata"]["managedFields"]
    assert [(e["manager"], e["operation"]) for e in entries] == [("labutils", "Apply")]

    status = backend.status()
    assert list(status["lws"]) == ["vllm-us-west-2a", "vllm-us-west-2b"]
    assert status["available"].all()

    pods = backend.groups()
    assert len(pods) == 4  # 2 zones x 1 group x (leader + 1 worker)
    assert sorted(pods["role"]) == ["leader", "leader", "worker", "worker"]
    assert pods["ready"].all()
    leader = pods[(pods["zone"] == "us-west-2b") & (pods["role"] == "leader")].iloc[0]
    assert leader["pod"] == "vllm-us-west-2b-0"
    assert leader["group"] == "vllm-us-west-2b-0"
    node = kube.get("", "nodes", "", leader["node"])
    assert node is not None
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "us-west-2b"

    backend.scale("vllm-us-west-2a", 2)
    backend.wait_ready(timeout_s=20)
    pods = backend.groups()
    zone_a = pods[pods["zone"] == "us-west-2a"]
    assert sorted(zone_a["pod"]) == [
        "vllm-us-west-2a-0",
        "vllm-us-west-2a-0-1",
        "vllm-us-west-2a-1",
        "vllm-us-west-2a-1-1",
    ]
    lws = kube.get(LWS, "leaderworkersets", NAMESPACE, "vllm-us-west-2a")
    assert lws is not None and lws["spec"]["replicas"] == 2
    scale_entries = [e for e in lws["metadata"]["managedFields"] if e.get("subresource")]
    assert scale_entries and scale_entries[0]["subresource"] == "scale"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        endpoints = backend.endpoints()
    assert any("bypasses the gateway" in str(w.message) for w in caught)
    assert backend.access == "api-server proxy"  # a laptop: the NLBs are internal
    assert endpoints.model == "llama-3.1-8b"
    assert set(endpoints.zone_urls) == set(ZONES)
    assert len(endpoints.groups) == 3
    assert endpoints.headers["Authorization"].startswith("Bearer ")
    # The API-server proxy URLs really lead to the leader (through the fake's proxy).
    code, body = _get(endpoints.groups[0].url + "/v1/models", endpoints.headers)
    assert code == 200 and json.loads(body)["data"][0]["id"] == "llama-3.1-8b"
    code, body = _get(endpoints.zone_urls["us-west-2b"] + "/v1/models", endpoints.headers)
    assert code == 200
    assert len(endpoints.to_frame()) == 1 + 2 + 3

    scrapes = backend.scrape_metrics()
    assert sorted(s.group for s in scrapes) == [
        "vllm-us-west-2a-0",
        "vllm-us-west-2a-1",
        "vllm-us-west-2b-0",
    ]
    recorded = (data_dir / "vllm-0.32.0-cpu-metrics.txt").read_text()
    assert all(s.error is None and s.text == recorded for s in scrapes)

    events = backend.events()
    assert (events["reason"] == "SuccessfulCreate").sum() >= 6

    dry = backend.reset()
    assert len(dry) == 8 and dry["action"].str.startswith("would delete").all()
    assert kube.names(LWS, "leaderworkersets", NAMESPACE) == {"vllm-us-west-2a", "vllm-us-west-2b"}

    done = backend.reset(yes=True, timeout_s=20)
    assert (done["action"] == "deleted").all()
    assert kube.names(LWS, "leaderworkersets", NAMESPACE) == set()
    assert kube.names("", "pods", NAMESPACE) == set()  # foreground deletion took the groups
    assert kube.names("", "namespaces") >= {NAMESPACE}  # the namespace itself stays
    again = backend.reset(yes=True, timeout_s=20)
    assert again.empty


def test_apply_from_rendered_dir_with_gateway_address(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    monkeypatch.setenv("LAB_EKS_REACH", "vpc")  # a machine inside the VPC reaches the NLBs

    rendered = tmp_path / "rendered"
    for obj in lab_objects(ZONES):
        kind = obj["kind"].lower()
        folder = rendered / ("gateway" if "Route" in obj["kind"] or kind == "gateway" else "zones")
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{kind}.yaml").open("a") as fh:
            fh.write("---\n" + yaml.safe_dump(obj))
    (rendered / "optional" / "keda").mkdir(parents=True)
    (rendered / "optional" / "keda" / "scaledobject-us-west-2a.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": "vllm-us-west-2a", "labels": PART_OF},
                "spec": {"scaleTargetRef": {"name": "vllm-us-west-2a"}},
            }
        )
    )
    backend = get_backend(
        "eks",
        kubeconfig=kube.write_kubeconfig(),
        config=LabConfig(zones=ZONES),
        poll_s=0.05,
        cache_dir=tmp_path / "discovery",
    )
    assert isinstance(backend, EksBackend)
    applied = backend.apply(rendered, timeout_s=20)
    assert "ScaledObject" not in set(applied["kind"])  # optional/ is never applied with HPAs
    assert kube.names("keda.sh", "scaledobjects") == set()
    gateway = kube.get("gateway.networking.k8s.io", "gateways", NAMESPACE, "vllm-gateway")
    assert gateway is not None
    gateway["status"] = {"addresses": [{"type": "Hostname", "value": "gw.example.internal"}]}
    kube.put("gateway.networking.k8s.io", "gateways", NAMESPACE, gateway)
    endpoints = backend.endpoints()
    assert endpoints.gateway_url == "http://gw.example.internal"
    assert "Authorization" not in endpoints.headers  # the cluster token stays off the LB
    assert backend.proxy_headers()["Authorization"].startswith("Bearer ")


def test_reapply_leaves_an_autoscaled_lws_replicas_to_the_autoscaler(
    kube: FakeKube, tmp_path: Path
) -> None:
    backend = _backend(kube, tmp_path)
    objects = lab_objects(ZONES, replicas=1)  # every LWS has an HPA
    first = backend.apply(objects=objects, timeout_s=20)
    assert set(first[first["kind"] == "LeaderWorkerSet"]["action"]) == {"applied"}
    # the HPA controller scales through the scale subresource (its own field manager)
    backend.scale("vllm-us-west-2a", 3)
    again = backend.apply(objects=objects, wait=False)  # no field conflict
    lws_rows = again[again["kind"] == "LeaderWorkerSet"]
    assert set(lws_rows["action"]) == {"applied (spec.replicas left to the autoscaler)"}
    lws = kube.get(LWS, "leaderworkersets", NAMESPACE, "vllm-us-west-2a")
    assert lws is not None and lws["spec"]["replicas"] == 3  # the autoscaler's value stays
    owners = {
        e["manager"] for e in lws["metadata"]["managedFields"] if "f:replicas" in
        e["fieldsV1"].get("f:spec", {})
    }  # fmt: skip
    assert owners == {"labutils-scale"}  # apply no longer claims spec.replicas


def test_reapply_after_scale_without_hpa_reports_conflict_then_force_takes_over(
    kube: FakeKube, tmp_path: Path
) -> None:
    backend = _backend(kube, tmp_path)
    objects = [o for o in lab_objects(ZONES, replicas=1) if o["kind"] != "HorizontalPodAutoscaler"]
    backend.apply(objects=objects, timeout_s=20)
    backend.scale("vllm-us-west-2a", 3)
    with pytest.raises(ClusterError) as info:
        backend.apply(objects=objects, wait=False)
    message = str(info.value)
    assert "\n" not in message
    assert "LeaderWorkerSet vllm-lab/vllm-us-west-2a" in message
    assert '"labutils-scale"' in message and ".spec.replicas" in message
    assert "force=True" in message
    lws = kube.get(LWS, "leaderworkersets", NAMESPACE, "vllm-us-west-2a")
    assert lws is not None and lws["spec"]["replicas"] == 3  # nothing changed on conflict

    backend.apply(objects=objects, wait=False, force=True)
    lws = kube.get(LWS, "leaderworkersets", NAMESPACE, "vllm-us-west-2a")
    assert lws is not None and lws["spec"]["replicas"] == 1
    managers = {e["manager"] for e in lws["metadata"]["managedFields"]}
    assert managers == {"labutils"}  # the scale manager lost its only field


def test_reset_spares_lookalikes_other_namespaces_and_other_kinds(
    kube: FakeKube, tmp_path: Path
) -> None:
    backend = _backend(kube, tmp_path)
    backend.apply(objects=lab_objects(ZONES), timeout_s=20)
    kube.put("", "namespaces", "", {"metadata": {"name": "team-b"}})
    planted = [
        # same kinds and names, but no lab label
        (LWS, "leaderworkersets", NAMESPACE, {"metadata": {"name": "vllm-us-west-2c"}}),
        ("", "services", NAMESPACE, {"metadata": {"name": "vllm-us-west-2c-api"}}),
        # a different value of the label
        (
            "",
            "configmaps",
            NAMESPACE,
            {"metadata": {"name": "other-app", "labels": {"app.kubernetes.io/part-of": "x"}}},
        ),
        # lab-labelled, but in a namespace that is not the lab's
        (
            "",
            "services",
            "team-b",
            {"metadata": {"name": "vllm-us-west-2a-api", "labels": dict(PART_OF)}},
        ),
        # lab-labelled kinds reset leaves alone (participants' RBAC/quota, a Deployment)
        (
            "rbac.authorization.k8s.io",
            "roles",
            NAMESPACE,
            {"metadata": {"name": "participant", "labels": dict(PART_OF)}},
        ),
        (
            "",
            "resourcequotas",
            NAMESPACE,
            {
                "metadata": {"name": "gpu", "labels": dict(PART_OF)},
                "spec": {"hard": {"requests.nvidia.com/gpu": "8"}},
            },
        ),
        (
            "apps",
            "deployments",
            NAMESPACE,
            {"metadata": {"name": "notebook", "labels": dict(PART_OF)}},
        ),
    ]
    for group, plural, namespace, obj in planted:
        kube.put(group, plural, namespace, obj)

    for _ in range(2):  # the second run must be harmless
        backend.reset(yes=True, timeout_s=20)
        for group, plural, namespace, obj in planted:
            assert kube.get(group, plural, namespace, obj["metadata"]["name"]) is not None, obj
    assert kube.names(LWS, "leaderworkersets", NAMESPACE) == {"vllm-us-west-2c"}
    # the planted LWS got its headless Service from the controller, like a real one would
    assert kube.names("", "services", NAMESPACE) == {"vllm-us-west-2c-api", "vllm-us-west-2c"}

    with pytest.raises(ClusterError, match="team-b is not a lab namespace"):
        backend.reset(namespaces=["team-b"])
