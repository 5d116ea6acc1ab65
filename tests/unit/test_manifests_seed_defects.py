"""Every seed defect listed under "Deployment", "Autoscaling" and "Load balancing" in the
corrections table of docs/manifests.md is absent from the rendered lab.

Each test checks the rendered objects directly, and, where the validator has a rule for the
defect, that the rule fires on the seed's own manifests (tests/data/seed_manifests, verbatim
from the seed page), so the check is known to catch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from labutils.config import load_config
from labutils.manifests import Problem, load_objects, render, validate
from labutils.manifests.loader import LoadedObject
from labutils.vllm_args import parse_vllm_serve

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_manifests"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
LB = "service.beta.kubernetes.io/aws-load-balancer-"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(out_dir=out)
    return out


@pytest.fixture(scope="module")
def objs(rendered: Path) -> list[LoadedObject]:
    return load_objects(rendered)


@pytest.fixture(scope="module")
def seed_problems() -> list[Problem]:
    return validate(SEED)


def _of(objs: list[LoadedObject], kind: str, optional: bool = False) -> list[LoadedObject]:
    return [o for o in objs if o.kind == kind and ("optional" in o.file.parts) == optional]


def _templates(lws: LoadedObject) -> dict[str, dict[str, Any]]:
    lwt = lws.data["spec"]["leaderWorkerTemplate"]
    return {"leader": lwt["leaderTemplate"]["spec"], "worker": lwt["workerTemplate"]["spec"]}


def _cmd(pod: dict[str, Any]) -> list[str]:
    c = pod["containers"][0]
    return [str(t) for t in c.get("command", []) + c.get("args", [])]


def _flagged(problems: list[Problem], text: str) -> bool:
    return any(text in str(p) for p in problems)


# --- Deployment ---------------------------------------------------------------------------------


def test_image_is_a_current_pinned_release(objs: list[LoadedObject], seed_problems) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        for pod in _templates(lws).values():
            image = pod["containers"][0]["image"]
            repo, tag = image.rsplit(":", 1)
            assert repo == "vllm/vllm-openai"
            major, minor = (int(x) for x in tag.lstrip("v").split(".")[:2])
            assert (major, minor) >= (0, 19), image
    assert _flagged(seed_problems, "'vllm/vllm-openai:v0.2.7' is years old")


def test_entrypoint_is_vllm_serve_with_served_model_name(objs, seed_problems) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        for pod in _templates(lws).values():
            tokens = _cmd(pod)
            assert tokens[:2] == ["vllm", "serve"]
            assert "vllm.entrypoints.openai.api_server" not in " ".join(tokens)
            args = parse_vllm_serve(tokens)
            assert args.model == "meta-llama/Llama-3.1-70B-Instruct"
            assert args.served_model_name == "llama-3.1-70b"
    assert _flagged(seed_problems, "api_server is deprecated")


def test_only_the_leader_serves_http_via_the_mp_backend(objs) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        pods = _templates(lws)
        leader = parse_vllm_serve(_cmd(pods["leader"]))
        worker = parse_vllm_serve(_cmd(pods["worker"]))
        assert not leader.headless and leader.node_rank == "0"
        assert leader.nnodes == "$(LWS_GROUP_SIZE)"
        assert leader.master_addr == "$(LWS_LEADER_ADDRESS)"
        assert worker.headless and worker.node_rank == "$(LWS_WORKER_INDEX)"
        assert worker.master_addr == "$(LWS_LEADER_ADDRESS)"
        assert leader.distributed_executor_backend != "ray"  # stock image has no Ray
        assert "ports" in pods["leader"]["containers"][0]
        assert "ports" not in pods["worker"]["containers"][0]
        assert "readinessProbe" not in pods["worker"]["containers"][0]


def test_tp_inside_a_node_pp_across_nodes(objs, seed_problems) -> None:
    cfg = load_config()
    for lws in _of(objs, "LeaderWorkerSet"):
        size = lws.data["spec"]["leaderWorkerTemplate"]["size"]
        for pod in _templates(lws).values():
            args = parse_vllm_serve(_cmd(pod))
            gpus = int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
            assert args.tensor_parallel_size == gpus == cfg.tensor_parallel_size
            assert args.pipeline_parallel_size == size == cfg.pipeline_parallel_size > 1
            assert size * gpus == args.tensor_parallel_size * args.pipeline_parallel_size
    # The seed put TP=4 across four 1-GPU pods.
    assert _flagged(seed_problems, "TP=4 must equal GPUs per pod (1)")


def test_no_cuda_visible_devices_and_gpus_in_limits(objs, seed_problems) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        for pod in _templates(lws).values():
            c = pod["containers"][0]
            assert "CUDA_VISIBLE_DEVICES" not in {e["name"] for e in c.get("env", [])}
            assert "nvidia.com/gpu" in c["resources"]["limits"]
    assert _flagged(seed_problems, "do not set CUDA_VISIBLE_DEVICES")


def test_shm_probes_and_group_restart(objs, seed_problems) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        lwt = lws.data["spec"]["leaderWorkerTemplate"]
        assert lwt["restartPolicy"] == "RecreateGroupAfterStart"
        for pod in _templates(lws).values():
            vols = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        leader = _templates(lws)["leader"]["containers"][0]
        for probe in ("readinessProbe", "startupProbe"):
            assert leader[probe]["httpGet"]["path"] == "/health"
        startup = leader["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert _flagged(seed_problems, "must be RecreateGroupAfterStart")
    assert _flagged(seed_problems, "/dev/shm from an emptyDir with medium: Memory")
    assert _flagged(seed_problems, "leader needs a readinessProbe httpGet on /health")


def test_model_storage_is_per_zone_and_shareable(objs) -> None:
    pvcs = {o.name: o for o in _of(objs, "PersistentVolumeClaim")}
    claims: dict[str, str] = {}
    for lws in _of(objs, "LeaderWorkerSet"):
        zone = lws.labels["vllm-lws-lab.io/zone"]
        for pod in _templates(lws).values():
            for vol in pod["volumes"]:
                if "persistentVolumeClaim" in vol:
                    claim = vol["persistentVolumeClaim"]["claimName"]
                    assert claims.setdefault(claim, lws.name) == lws.name, "PVC shared by zones"
                    pvc = pvcs[claim]
                    assert "ReadWriteMany" in pvc.data["spec"]["accessModes"]
                    assert pvc.labels["vllm-lws-lab.io/zone"] == zone
    assert len(claims) == len(load_config().zones)


def test_rwo_pvc_shared_by_zones_is_caught(tmp_path: Path, rendered: Path) -> None:
    # The seed's one RWO `model-pvc` for every zone, rebuilt on the rendered lab.
    for zone in load_config().zones:
        lws_file = rendered / "zones" / zone / "lws.yaml"
        text = lws_file.read_text().replace(f"vllm-models-{zone}", "model-pvc")
        (tmp_path / f"{zone}-lws.yaml").write_text(text)
    pvc = yaml.safe_load((rendered / "zones/us-west-2a/storage.yaml").read_text())
    pvc["metadata"]["name"] = "model-pvc"
    pvc["spec"]["accessModes"] = ["ReadWriteOnce"]
    del pvc["metadata"]["labels"]["vllm-lws-lab.io/zone"]
    (tmp_path / "pvc.yaml").write_text(yaml.safe_dump(pvc))
    text = "\n".join(str(p) for p in validate(tmp_path))
    assert "one RWO volume cannot serve pods on several nodes" in text
    assert "is shared by ['vllm-us-west-2a', 'vllm-us-west-2b', 'vllm-us-west-2c']" in text


def test_each_lws_is_pinned_to_its_zone(objs) -> None:
    lwss = _of(objs, "LeaderWorkerSet")
    assert sorted(o.labels["vllm-lws-lab.io/zone"] for o in lwss) == sorted(load_config().zones)
    for lws in lwss:
        zone = lws.labels["vllm-lws-lab.io/zone"]
        assert lws.file.parent.name == zone
        for pod in _templates(lws).values():
            terms = pod["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            exprs = terms["nodeSelectorTerms"][0]["matchExpressions"]
            assert {
                "key": "topology.kubernetes.io/zone",
                "operator": "In",
                "values": [zone],
            } in exprs


def test_chat_model_and_api_key_from_secret(objs) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        leader = _templates(lws)["leader"]["containers"][0]
        assert "Instruct" in parse_vllm_serve(_cmd(_templates(lws)["leader"])).model
        env = {e["name"]: e for e in leader["env"]}
        assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "vllm-api-key"
        # The HF token is a mounted Secret file (huggingface_hub reads HF_TOKEN_PATH), not env.
        assert "HF_TOKEN" not in env
        mount_dir = env["HF_TOKEN_PATH"]["value"].rsplit("/", 1)[0]
        mounts = {m["mountPath"]: m for m in leader["volumeMounts"]}
        volumes = {v["name"]: v for v in _templates(lws)["leader"]["volumes"]}
        assert mounts[mount_dir]["readOnly"] is True
        assert volumes[mounts[mount_dir]["name"]]["secret"]["secretName"] == "hf-token"
        assert "--api-key" not in _cmd(_templates(lws)["leader"])
    for secret in _of(objs, "Secret"):
        assert "data" not in secret.data and "stringData" not in secret.data


def test_graceful_scale_down(objs, seed_problems) -> None:
    for lws in _of(objs, "LeaderWorkerSet"):
        pod = _templates(lws)["leader"]
        tokens = _cmd(pod)
        timeout_s = int(tokens[tokens.index("--shutdown-timeout") + 1])
        assert pod["terminationGracePeriodSeconds"] >= timeout_s
    assert _flagged(seed_problems, "add --shutdown-timeout")


# --- Autoscaling --------------------------------------------------------------------------------


def test_one_hpa_per_lws_targeting_the_lws(objs, seed_problems) -> None:
    targets = []
    for hpa in _of(objs, "HorizontalPodAutoscaler"):
        ref = hpa.data["spec"]["scaleTargetRef"]
        assert ref["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
        assert ref["kind"] == "LeaderWorkerSet"
        targets.append(ref["name"])
    assert sorted(targets) == sorted(o.name for o in _of(objs, "LeaderWorkerSet"))
    # The seed scaled only the az1 LWS.
    assert _flagged(seed_problems, "vllm-distributed-cluster-az2: metadata.name: no HPA scales")


def test_hpa_scales_on_queue_depth_served_by_the_adapter(objs, seed_problems) -> None:
    adapter = next(o for o in _of(objs, "ConfigMap") if o.name == "vllm-lab-adapter-rules")
    rules = yaml.safe_load(adapter.data["data"]["config.yaml"])["rules"]
    rule = next(r for r in rules if r["name"]["as"] == "vllm_num_requests_waiting")
    assert rule["seriesQuery"].startswith("vllm:num_requests_waiting")
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    for hpa in _of(objs, "HorizontalPodAutoscaler"):
        metrics = hpa.data["spec"]["metrics"]
        assert [m["type"] for m in metrics] == ["Pods"]
        assert metrics[0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting"
        assert {"scaleUp", "scaleDown"} <= set(hpa.data["spec"]["behavior"])
    assert _flagged(seed_problems, "cpu utilisation is not a GPU-inference signal")
    assert _flagged(seed_problems, "metric 'inference_queue_length' is served by no")


def test_keda_alternative_is_optional_and_not_both(rendered: Path, objs) -> None:
    assert not _of(objs, "ScaledObject")  # none outside optional/
    scaled = _of(objs, "ScaledObject", optional=True)
    assert all(o.file.parent == rendered / "optional" / "keda" for o in scaled)
    assert sorted(o.data["spec"]["scaleTargetRef"]["name"] for o in scaled) == sorted(
        o.name for o in _of(objs, "LeaderWorkerSet")
    )
    for so in scaled:
        trigger = so.data["spec"]["triggers"][0]
        assert trigger["type"] == "prometheus"
        assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]


def test_gpu_nodes_come_from_karpenter_not_a_ca_configmap(objs, seed_problems) -> None:
    assert not [o for o in objs if o.name == "cluster-autoscaler-status"]
    pools = _of(objs, "NodePool")
    assert len(pools) == len(load_config().zones)
    for pool in pools:
        spec = pool.data["spec"]["template"]["spec"]
        reqs = {r["key"]: r["values"] for r in spec["requirements"]}
        assert reqs["topology.kubernetes.io/zone"] == [pool.labels["vllm-lws-lab.io/zone"]]
        assert reqs["node.kubernetes.io/instance-type"] == [load_config().instance_type]
        assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in spec["taints"]
    assert _flagged(seed_problems, "cluster-autoscaler-status is the status Cluster Autoscaler")


# --- Load balancing -----------------------------------------------------------------------------


def test_services_select_leaders_only(objs, seed_problems) -> None:
    services = [s for s in _of(objs, "Service") if s.data["spec"].get("selector")]
    assert len(services) == len(load_config().zones)
    for svc in services:
        selector = svc.data["spec"]["selector"]
        assert selector[WORKER_INDEX] == "0"
        assert selector[LWS_NAME] == svc.name.removesuffix("-api")
    assert _flagged(seed_problems, "selector also matches worker pods")


def test_nlb_annotations_are_real_and_in_range(objs, seed_problems) -> None:
    for svc in _of(objs, "Service"):
        ann = svc.data["metadata"]["annotations"]
        assert ann[LB + "type"] == "external"
        assert ann[LB + "nlb-target-type"] == "ip"
        assert ann[LB + "scheme"] == "internal"
        assert "load_balancing.cross_zone.enabled=true" in ann[LB + "attributes"]
        assert ann[LB + "healthcheck-protocol"] == "http"
        assert ann[LB + "healthcheck-path"] == "/health"
        assert 5 <= int(ann[LB + "healthcheck-interval"]) <= 300
        assert 2 <= int(ann[LB + "healthcheck-timeout"]) <= 120
        for key in ("healthcheck-healthy-threshold", "healthcheck-unhealthy-threshold"):
            assert 2 <= int(ann[LB + key]) <= 10
        assert LB + "healthy-threshold" not in ann
        assert LB + "cross-zone-load-balancing-enabled" not in ann
    assert _flagged(seed_problems, 'aws-load-balancer-healthy-threshold"]: not an AWS')
    assert _flagged(seed_problems, "must be 'external' (got 'nlb')")


def test_httproute_is_v1_and_every_backend_exists(objs, seed_problems) -> None:
    (route,) = _of(objs, "HTTPRoute")
    assert route.api_version == "gateway.networking.k8s.io/v1"
    services = {s.name for s in _of(objs, "Service")}
    refs = route.data["spec"]["rules"][0]["backendRefs"]
    assert [r["name"] for r in refs] == [f"vllm-{z}-api" for z in load_config().zones]
    assert all(r["name"] in services for r in refs)
    assert all(0 <= r["weight"] <= 1_000_000 for r in refs) and len(refs) <= 16
    (gateway,) = _of(objs, "Gateway")
    parent = route.data["spec"]["parentRefs"][0]
    assert parent["name"] == gateway.name and "namespace" not in parent
    assert _flagged(seed_problems, "no Service 'vllm-distributed-service-az2'")
    assert _flagged(seed_problems, "use 'gateway.networking.k8s.io/v1'")


def test_header_filter_sets_the_serving_zone(objs, seed_problems) -> None:
    (route,) = _of(objs, "HTTPRoute")
    for ref in route.data["spec"]["rules"][0]["backendRefs"]:
        zone = ref["name"].removeprefix("vllm-").removesuffix("-api")
        filters = {f["type"]: f for f in ref["filters"]}
        req = filters["RequestHeaderModifier"]["requestHeaderModifier"]
        assert req["set"] == [{"name": "X-Inference-Zone", "value": zone}]
        assert "add" not in req
        resp = filters["ResponseHeaderModifier"]["responseHeaderModifier"]
        assert resp["set"] == [{"name": "x-lab-zone", "value": zone}]
    assert _flagged(seed_problems, "use 'set', not 'add'")
