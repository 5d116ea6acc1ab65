"""What the rendered manifests deploy, read back as tables.

The per-zone plan, the LWS templates, the ``vllm serve`` flags, zone placement and the pods the
leader-only Service selects; used by notebook 01, ``labctl plan`` and the instructor plan.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from labutils import catalog
from labutils.config import default_state_dir
from labutils.errors import ManifestError
from labutils.kube.labels import (
    GPU_RESOURCE,
    INSTANCE_TYPE_LABEL,
    LWS_LABEL_PREFIX,
    LWS_NAME_LABEL,
    LWS_WORKER_INDEX_LABEL,
    NODE_ZONE_LABEL,
    ZONE_LABEL,
)
from labutils.manifests import LoadedObject, load_objects, render
from labutils.vllm_args import VllmServeArgs, parse_vllm_serve

__all__ = [
    "deployment_plan",
    "lws_templates",
    "parallel_layout",
    "render_lab",
    "serve_command",
    "service_selection",
    "zone_placement",
]


# --- reading the rendered manifests ----------------------------------------------------------
def render_lab(out_dir: str | Path | None = None) -> Path:
    """Render ``manifests/`` + ``lab.yaml`` (as ``labctl render``) and return the folder.

    Args:
        out_dir: where to write (default: ``rendered/`` in the lab's state dir, the folder the
            twin itself renders into).
    """
    out = Path(out_dir) if out_dir else default_state_dir() / "rendered"
    render(out_dir=out)
    return out


def _objects(rendered: str | Path) -> list[LoadedObject]:
    root = Path(rendered)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder of rendered manifests; run render_lab() first")
    # optional/ is never applied (KEDA replaces the HPAs, it does not join them)
    return [o for o in load_objects(root) if "optional" not in o.file.relative_to(root).parts]


def _zone(obj: LoadedObject) -> str:
    labels = (obj.data.get("metadata") or {}).get("labels") or {}
    return str(labels.get(ZONE_LABEL, ""))


def _lws_objects(rendered: str | Path) -> list[LoadedObject]:
    found = [o for o in _objects(rendered) if o.kind == "LeaderWorkerSet"]
    if not found:
        raise ManifestError(f"{rendered}: no LeaderWorkerSet in the rendered manifests")
    return sorted(found, key=lambda o: o.name)


def _pick_lws(rendered: str | Path, zone: str | None) -> LoadedObject:
    found = _lws_objects(rendered)
    if zone is None:
        return found[0]
    for obj in found:
        if _zone(obj) == zone:
            return obj
    zones = ", ".join(_zone(o) for o in found)
    raise ManifestError(f"{rendered}: no LeaderWorkerSet in zone {zone!r}; zones: {zones}")


def _template(lws: LoadedObject, role: str) -> dict[str, Any]:
    lwt = lws.data["spec"]["leaderWorkerTemplate"]
    key = "leaderTemplate" if role == "leader" else "workerTemplate"
    # LWS uses the worker template for the leader too when leaderTemplate is absent
    return dict(lwt.get(key) or lwt["workerTemplate"])


def _container(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["spec"]["containers"][0])


def _gpus(container: dict[str, Any]) -> int:
    resources = container.get("resources") or {}
    value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (
        resources.get("requests") or {}
    ).get(GPU_RESOURCE)
    return int(value or 0)


def _serve_args(container: dict[str, Any]) -> VllmServeArgs:
    return parse_vllm_serve([*container.get("command", []), *container.get("args", [])])


def _instance_type(template: dict[str, Any]) -> str:
    return str((template["spec"].get("nodeSelector") or {}).get(INSTANCE_TYPE_LABEL, ""))


def deployment_plan(rendered: str | Path) -> pd.DataFrame:
    """One row per object the lab applies: kind, name, zone, replicas, GPUs, file.

    ``replicas`` is the LWS's groups (or the HPA's min–max); ``gpus`` what the object asks for
    at its starting size (LWS: groups × pods per group × GPUs per pod; NodePool: its limit).
    """
    rows = []
    root = Path(rendered)
    for obj in _objects(root):
        spec = obj.data.get("spec") or {}
        replicas: str = ""
        gpus: int | None = None
        detail = ""
        if obj.kind == "LeaderWorkerSet":
            size = int(spec["leaderWorkerTemplate"].get("size", 1))
            leader = _template(obj, "leader")
            per_pod = _gpus(_container(leader))
            groups = int(spec.get("replicas", 1))
            replicas = str(groups)
            gpus = groups * size * per_pod
            detail = (f"{groups} groups x {size} pods x {per_pod} GPUs on "
                      f"{_instance_type(leader)}")  # fmt: skip
        elif obj.kind == "HorizontalPodAutoscaler":
            replicas = f"{spec.get('minReplicas', 1)}-{spec.get('maxReplicas', '')}"
            metrics = [m.get("pods", {}).get("metric", {}).get("name", m.get("type", ""))
                       for m in spec.get("metrics", [])]  # fmt: skip
            detail = f"scales {spec['scaleTargetRef']['name']} on {', '.join(metrics)}"
        elif obj.kind == "NodePool":
            gpus = int((spec.get("limits") or {}).get(GPU_RESOURCE, 0) or 0) or None
            detail = "GPU limit of the zone's nodes"
        elif obj.kind == "Service":
            selector = spec.get("selector") or {}
            detail = f"{spec.get('type', 'ClusterIP')}, selects " + ", ".join(
                f"{k.removeprefix(LWS_LABEL_PREFIX)}={v}" for k, v in selector.items()
            )
        elif obj.kind == "HTTPRoute":
            refs = [r for rule in spec.get("rules", []) for r in rule.get("backendRefs", [])]
            detail = ", ".join(f"{r['name']} w={r.get('weight', 1)}" for r in refs)
        rows.append({
            "kind": obj.kind, "name": obj.name, "zone": _zone(obj) or "(all)",
            "namespace": obj.namespace or "(cluster)", "replicas": replicas,
            "gpus": gpus, "detail": detail, "file": str(obj.file.relative_to(root)),
        })  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["gpus"] = frame["gpus"].astype("Int64")
    return frame.sort_values(["zone", "kind", "name"], kind="stable").reset_index(drop=True)


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            name = item.get("name", i) if isinstance(item, dict) else i
            _flatten(item, f"{prefix}[{name}]", out)
    elif isinstance(value, list):
        out[prefix] = " ".join(map(str, value))
    else:
        out[prefix] = str(value)


def zone_placement(rendered: str | Path) -> pd.DataFrame:
    """Per LWS: how its pods are pinned to their zone and hardware (from the leader template)."""
    rows = []
    for lws in _lws_objects(rendered):
        spec = _template(lws, "leader")["spec"]
        terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution") or {}
                 ).get("nodeSelectorTerms") or []  # fmt: skip
        exprs = [e for t in terms for e in t.get("matchExpressions", [])]
        zones = [v for e in exprs if e.get("key") == NODE_ZONE_LABEL
                 for v in e.get("values", [])]  # fmt: skip
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
                  if "persistentVolumeClaim" in v]  # fmt: skip
        rows.append({
            "lws": lws.name, "zone_label": _zone(lws),
            "required_node_zone": ", ".join(zones),
            "instance_type": _instance_type(_template(lws, "leader")),
            "gpu_toleration": any(
                t.get("key") == GPU_RESOURCE for t in spec.get("tolerations", [])
            ),
            "model_cache_pvc": ", ".join(claims),
            "replicas": int(lws.data["spec"].get("replicas", 1)),
        })  # fmt: skip
    return pd.DataFrame(rows)


def lws_templates(
    rendered: str | Path, zone: str | None = None, *, only_differences: bool = True
) -> pd.DataFrame:
    """The LWS leader and worker pod templates side by side, one row per field.

    Args:
        rendered: the rendered manifests folder.
        zone: which zone's LWS (default: the first).
        only_differences: keep only the fields where leader and worker differ.
    """
    lws = _pick_lws(rendered, zone)
    sides: dict[str, dict[str, str]] = {}
    for role in ("leader", "worker"):
        flat: dict[str, str] = {}
        template = _template(lws, role)
        container = _container(template)
        container.pop("args", None)  # shown parsed by serve_command()
        _flatten({**template, "spec": {**template["spec"], "containers": [container]}}, "", flat)
        sides[role] = flat
    keys = list(dict.fromkeys([*sides["leader"], *sides["worker"]]))
    short = {k: k.replace("spec.containers[", "container[").replace("metadata.labels.", "label ")
             for k in keys}  # fmt: skip
    leader, worker = sides["leader"], sides["worker"]
    rows = [{"field": short[k], "leader": leader.get(k, "—"), "worker": worker.get(k, "—")}
            for k in keys]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["field", "leader", "worker"])
    if only_differences:
        frame = frame[frame["leader"] != frame["worker"]]
    return frame.reset_index(drop=True)


_FLAG_MEANING = {
    "model": "Hugging Face model id (weights from the zone's model cache PVC)",
    "served_model_name": "the name clients send as 'model'",
    "host": "listen address (leader only serves HTTP)",
    "port": "API port (the Service's targetPort 'http')",
    "tensor_parallel_size": "TP: GPUs per pod that split every layer (NVLink/PCIe in a node)",
    "pipeline_parallel_size": "PP: pods (nodes) that split the layers; = LWS group size",
    "max_num_seqs": "most sequences in one batch",
    "max_num_batched_tokens": "token budget of one scheduler step",
    "max_model_len": "context length (prompt + output)",
    "gpu_memory_utilization": "share of GPU memory for weights + KV cache",
    "nnodes": "nodes of the group ($(LWS_GROUP_SIZE) injected by LWS)",
    "node_rank": "this pod's rank: leader 0, workers $(LWS_WORKER_INDEX)",
    "master_addr": "where ranks meet: the leader's address, injected by LWS",
    "headless": "no API server: a worker only runs its pipeline stage",
}


def serve_command(rendered: str | Path, zone: str | None = None) -> pd.DataFrame:
    """The leader's and worker's ``vllm serve`` command lines parsed into one row per flag."""
    lws = _pick_lws(rendered, zone)
    parsed = {role: _serve_args(_container(_template(lws, role))) for role in ("leader", "worker")}
    rows = []
    for f in fields(VllmServeArgs):
        if f.name in ("unknown", "api_key", "distributed_executor_backend"):
            continue
        leader, worker = getattr(parsed["leader"], f.name), getattr(parsed["worker"], f.name)
        if f.name in ("host", "port") and parsed["worker"].headless:
            worker = "—"  # a headless worker serves no API
        rows.append({"flag": "--" + f.name.replace("_", "-") if f.name != "model" else "MODEL",
                     "leader": str(leader), "worker": str(worker),
                     "meaning": _FLAG_MEANING.get(f.name, "")})  # fmt: skip
    extra = {role: " ".join(parsed[role].unknown) for role in parsed}
    if any(extra.values()):
        rows.append({"flag": "(other flags)", "leader": extra["leader"],
                     "worker": extra["worker"], "meaning": "passed to vLLM as is"})  # fmt: skip
    return pd.DataFrame(rows, columns=["flag", "leader", "worker", "meaning"])


def parallel_layout(rendered: str | Path) -> pd.DataFrame:
    """Per zone: group size (pods), GPUs per pod, TP, PP, and whether size × GPUs = TP × PP."""
    rows = []
    for lws in _lws_objects(rendered):
        leader = _template(lws, "leader")
        container = _container(leader)
        args = _serve_args(container)
        size = int(lws.data["spec"]["leaderWorkerTemplate"].get("size", 1))
        per_pod = _gpus(container)
        instance = _instance_type(leader)
        gpu = catalog.instance_type(instance).gpu if instance else ""
        rows.append({
            "zone": _zone(lws), "lws": lws.name, "instance_type": instance, "gpu": gpu,
            "group_size_pods": size, "gpus_per_pod": per_pod,
            "tp": args.tensor_parallel_size, "pp": args.pipeline_parallel_size,
            "gpus_per_group": size * per_pod,
            "tp_x_pp": args.tensor_parallel_size * args.pipeline_parallel_size,
            "holds": size * per_pod == args.tensor_parallel_size * args.pipeline_parallel_size
            and size == args.pipeline_parallel_size,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == str(v) for k, v in selector.items())


def service_selection(rendered: str | Path, pods: pd.DataFrame) -> pd.DataFrame:
    """For every pod (``backend.groups()``): which zone Service selects it.

    The pod labels are the ones LWS sets (``leaderworkerset.sigs.k8s.io/name`` and
    ``worker-index``: 0 for the leader, ``i`` for worker ``i``); the Service selectors come from
    the rendered manifests.
    """
    services = [o for o in _objects(rendered) if o.kind == "Service"]
    rows = []
    for pod in pods.itertuples():
        suffix = str(pod.pod).rsplit("-", 1)[-1] if pod.role == "worker" else "0"
        labels = {
            LWS_NAME_LABEL: str(pod.lws),
            LWS_WORKER_INDEX_LABEL: suffix,
        }
        chosen = [s.name for s in services if _selects((s.data.get("spec") or {}).get(
            "selector") or {}, labels)]  # fmt: skip
        rows.append({"zone": pod.zone, "pod": pod.pod, "role": pod.role,
                     "selected_by": ", ".join(chosen) or "(none)"})  # fmt: skip
    return pd.DataFrame(rows, columns=["zone", "pod", "role", "selected_by"])
