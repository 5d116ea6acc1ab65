"""Deploying the lab: what the rendered manifests describe, a watched apply, and its checks.

Everything here reads the *rendered* manifests (``labctl render``) or asks the backend, so the
same calls work on the local twin and on EKS. Notebooks 00 and 01 use it:

* :func:`render_lab`, :func:`deployment_plan`, :func:`lab_summary` — what the lab deploys;
* :func:`lws_templates`, :func:`serve_command`, :func:`parallel_layout` — the LWS explained;
* :func:`watch_apply` (a :class:`Rollout`), :func:`plot_rollout` — apply and time each group;
* :func:`first_requests` — a few chat requests through the gateway, with who served them;
* :func:`check_available`, :func:`check_group_count`, :func:`check_leader_only_service`,
  :func:`check_parallel_layout` — the lesson holds, or a :class:`ValidationError` says why.

``labctl plan [--rendered DIR]`` prints :func:`deployment_plan`.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
from matplotlib.figure import Figure

with warnings.catch_warnings():
    # Without ipywidgets tqdm.auto warns once and falls back to text bars, which render fine in
    # notebooks and logs; importing it here first keeps that warning out of every notebook.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

from labutils import catalog
from labutils._aio import run_sync
from labutils._progress import show_progress
from labutils.backend import Backend
from labutils.config import default_state_dir, lab_target
from labutils.errors import EndpointError, ManifestError, ValidationError, WaitTimeout
from labutils.manifests import LoadedObject, load_objects, render
from labutils.vllm_args import VllmServeArgs, parse_vllm_serve

__all__ = [
    "Rollout",
    "check_available",
    "check_group_count",
    "check_leader_only_service",
    "check_parallel_layout",
    "deployment_plan",
    "first_requests",
    "groups_per_zone",
    "lab_summary",
    "lws_templates",
    "parallel_layout",
    "plot_plan",
    "plot_rollout",
    "register",
    "render_lab",
    "serve_command",
    "service_selection",
    "watch_apply",
    "zone_placement",
]

_GPU = "nvidia.com/gpu"
_ZONE_LABEL = "vllm-lws-lab.io/zone"
_LWS_LABEL = "leaderworkerset.sigs.k8s.io/"
_INSTANCE_LABEL = "node.kubernetes.io/instance-type"


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
    return str(labels.get(_ZONE_LABEL, ""))


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
    value = (resources.get("limits") or {}).get(_GPU) or (resources.get("requests") or {}).get(_GPU)
    return int(value or 0)


def _serve_args(container: dict[str, Any]) -> VllmServeArgs:
    return parse_vllm_serve([*container.get("command", []), *container.get("args", [])])


def _instance_type(template: dict[str, Any]) -> str:
    return str((template["spec"].get("nodeSelector") or {}).get(_INSTANCE_LABEL, ""))


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
            gpus = int((spec.get("limits") or {}).get(_GPU, 0) or 0) or None
            detail = "GPU limit of the zone's nodes"
        elif obj.kind == "Service":
            selector = spec.get("selector") or {}
            detail = f"{spec.get('type', 'ClusterIP')}, selects " + ", ".join(
                f"{k.removeprefix(_LWS_LABEL)}={v}" for k, v in selector.items()
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


def lab_summary(rendered: str | Path, target: str | None = None) -> pd.DataFrame:
    """The lab in a few lines (read from the rendered manifests): model, hardware, layout.

    On ``local`` the ``engines`` row says they are *simulated* and which GPU they simulate.
    """
    lwss = _lws_objects(rendered)
    first = lwss[0]
    leader = _template(first, "leader")
    container = _container(leader)
    args = _serve_args(container)
    instance = catalog.instance_type(_instance_type(leader))
    size = int(first.data["spec"]["leaderWorkerTemplate"].get("size", 1))
    groups = sum(int(o.data["spec"].get("replicas", 1)) for o in lwss)
    gpus = groups * size * _gpus(container)
    if lab_target(target) == "local":
        engines = (f"SIMULATED {instance.gpu.upper()} engines (labutils.sim: vLLM's HTTP API "
                   "and metrics, a GPU roofline model) on 127.0.0.1, one per group")  # fmt: skip
    else:
        engines = f"{container['image']} on {instance.name} nodes"
    facts = [
        ("model", args.model),
        ("served model name (clients send)", args.name),
        ("image", str(container.get("image", ""))),
        ("instance type", f"{instance.name}: {instance.gpus} x {instance.gpu.upper()}"),
        ("tensor parallel (TP, GPUs per pod)", str(args.tensor_parallel_size)),
        ("pipeline parallel (PP, pods per group)", str(args.pipeline_parallel_size)),
        ("zones", ", ".join(_zone(o) for o in lwss)),
        ("groups (LWS replicas) in all zones", str(groups)),
        ("GPUs in all zones at start", str(gpus)),
        ("engines", engines),
    ]
    return pd.DataFrame(facts, columns=["what", "value"])


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


def plot_plan(plan: pd.DataFrame) -> Figure:
    """Bars per zone: GPUs the LWS asks for at start and the NodePool's GPU limit (the most
    the zone may scale to), from :func:`deployment_plan`."""
    import matplotlib.pyplot as plt

    zonal = plan[plan["zone"] != "(all)"]
    zones = sorted(zonal["zone"].unique())
    start = [int(zonal[(zonal["zone"] == z) & (zonal["kind"] == "LeaderWorkerSet")]["gpus"].sum())
             for z in zones]  # fmt: skip
    limit = [int(zonal[(zonal["zone"] == z) & (zonal["kind"] == "NodePool")]["gpus"].sum())
             for z in zones]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = list(range(len(zones)))
    b1 = ax.bar([i - 0.2 for i in x], start, 0.4, label="LWS at start (groups x pods x GPUs)")
    b2 = ax.bar([i + 0.2 for i in x], limit, 0.4, label="NodePool limit (max groups)")
    ax.bar_label(b1, fontsize=8)
    ax.bar_label(b2, fontsize=8)
    ax.set_xticks(x, zones)
    ax.set_ylabel("GPUs (nvidia.com/gpu)")
    ax.set_ylim(0, max([*start, *limit, 1]) * 1.35)  # room for the legend above the bars
    ax.set_title("GPUs per availability zone, read from the rendered manifests", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter shows it once, as the cell's result
    return fig


def zone_placement(rendered: str | Path) -> pd.DataFrame:
    """Per LWS: how its pods are pinned to their zone and hardware (from the leader template)."""
    rows = []
    for lws in _lws_objects(rendered):
        spec = _template(lws, "leader")["spec"]
        terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution") or {}
                 ).get("nodeSelectorTerms") or []  # fmt: skip
        exprs = [e for t in terms for e in t.get("matchExpressions", [])]
        zones = [v for e in exprs if e.get("key") == "topology.kubernetes.io/zone"
                 for v in e.get("values", [])]  # fmt: skip
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
                  if "persistentVolumeClaim" in v]  # fmt: skip
        rows.append({
            "lws": lws.name, "zone_label": _zone(lws),
            "required_node_zone": ", ".join(zones),
            "instance_type": _instance_type(_template(lws, "leader")),
            "gpu_toleration": any(t.get("key") == _GPU for t in spec.get("tolerations", [])),
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


def check_parallel_layout(layout: pd.DataFrame) -> pd.DataFrame:
    """Raise unless every zone's group size × GPUs per pod = TP × PP (and size = PP).

    Raises:
        ValidationError: names the LWS and its numbers.
    """
    bad = layout[~layout["holds"].astype(bool)]
    if not bad.empty:
        problems = [
            f"{r.lws}: {r.group_size_pods} pods x {r.gpus_per_pod} GPUs != TP {r.tp} x PP {r.pp}"
            for r in bad.itertuples()
        ]
        raise ValidationError(f"parallel layout: {problems[0]} (fix lab.yaml)", problems)
    return layout


# --- applying and watching -------------------------------------------------------------------
@dataclass(frozen=True)
class Rollout:
    """What :func:`watch_apply` saw: when each group first appeared and became ready.

    Attributes:
        groups: one row per group: zone, lws, group, pods, seen_s, ready_s (seconds since the
            apply started; NaN where never seen/ready).
        expected_groups: groups the rendered manifests ask for (replicas × zones).
        apply_s: how long the apply call itself took.
        total_s: from the apply until every LWS was Available.
        target: the backend's target (``local`` or ``eks``).
    """

    groups: pd.DataFrame
    expected_groups: int
    apply_s: float
    total_s: float
    target: str

    def to_frame(self) -> pd.DataFrame:
        """The groups with their time to ready (``ready_s - seen_s``)."""
        frame = self.groups.copy()
        frame["time_to_ready_s"] = frame["ready_s"] - frame["seen_s"]
        return frame


def _expected(rendered: str | Path) -> dict[str, int]:
    return {o.name: int(o.data["spec"].get("replicas", 1)) for o in _lws_objects(rendered)}


def _available(status: pd.DataFrame) -> pd.Series:
    if "available" in status:
        return status["available"].astype(bool)
    return status["conditions"].astype(str).str.contains("Available")


def watch_apply(
    backend: Backend,
    rendered: str | Path,
    *,
    timeout_s: float = 900.0,
    poll_s: float = 0.25,
) -> Rollout:
    """Apply the rendered manifests and watch (progress bar) until every LWS is Available.

    Each group's times come from polling ``backend.groups()``: first seen (its pods exist) and
    ready (every pod of the group ready). Works the same on the twin and on EKS.

    Raises:
        WaitTimeout: not all groups ready in ``timeout_s``; names those that are not and the
            LWS status.
    """
    expected = _expected(rendered)
    want = sum(expected.values())
    start = time.monotonic()
    backend.apply(Path(rendered), wait=False, timeout_s=timeout_s)
    apply_s = time.monotonic() - start
    seen: dict[str, dict[str, Any]] = {}
    with tqdm(total=want, desc="groups ready", unit="group", leave=False) as bar:
        while True:
            now = time.monotonic() - start
            pods = backend.groups()
            for group, part in pods.groupby("group", sort=False) if not pods.empty else ():
                row = seen.setdefault(str(group), {
                    "zone": str(part["zone"].iloc[0]), "lws": str(part["lws"].iloc[0]),
                    "group": str(group), "pods": len(part), "seen_s": now,
                    "ready_s": float("nan")})  # fmt: skip
                row["pods"] = len(part)
                if part["ready"].astype(bool).all() and row["ready_s"] != row["ready_s"]:
                    row["ready_s"] = now
            ready = sum(1 for r in seen.values() if r["ready_s"] == r["ready_s"])
            show_progress(bar, min(ready, want))
            status = backend.status()
            if ready >= want and not status.empty and bool(_available(status).all()):
                break
            if now > timeout_s:
                waiting = [g for g, r in seen.items() if r["ready_s"] != r["ready_s"]]
                last = "; ".join(f"{r.lws} {r.ready_replicas}/{r.replicas} ready"
                                 for r in status.itertuples())  # fmt: skip
                raise WaitTimeout(
                    f"apply of {rendered}: {ready}/{want} groups ready after {timeout_s:.0f}s "
                    f"(not ready: {', '.join(waiting) or 'none created yet'}); status: {last}"
                )
            time.sleep(poll_s)
    total_s = time.monotonic() - start
    frame = pd.DataFrame(list(seen.values()),
                         columns=["zone", "lws", "group", "pods", "seen_s", "ready_s"])  # fmt: skip
    frame = frame.sort_values(["zone", "group"]).reset_index(drop=True)
    return Rollout(frame, want, apply_s, total_s, getattr(backend, "target", ""))


def plot_rollout(rollout: Rollout) -> Figure:
    """Horizontal bars per group: from first seen to ready, coloured by zone."""
    import matplotlib.pyplot as plt

    frame = rollout.to_frame()
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8.5, 0.45 * max(len(frame), 3) + 1.4))
    colors = {z: f"C{i}" for i, z in enumerate(sorted(frame["zone"].unique()))}
    y = list(range(len(frame)))[::-1]
    for yi, row in zip(y, frame.to_dict("records"), strict=True):
        seen_s, ready_in_s = float(row["seen_s"]), float(row["time_to_ready_s"])
        width = ready_in_s if ready_in_s == ready_in_s else 0.0
        ax.barh(yi, width, left=seen_s, color=colors[row["zone"]], height=0.6)
        ax.annotate(f"{width:.1f} s", (seen_s + width, yi), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(y, frame["group"].tolist())
    ax.set_xlabel("seconds since apply (bar: group created -> all its pods ready)")
    ax.axvline(rollout.apply_s, color="grey", linestyle="--", linewidth=1)
    handles: list[Artist] = [Patch(color=c, label=z) for z, c in colors.items()]
    handles.append(Line2D([], [], color="grey", linestyle="--",
                          label=f"apply returned ({rollout.apply_s:.1f} s)"))  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    what = ("SIMULATED engines: model load + process start" if rollout.target == "local"
            else "real engines: image pull + weight load + /health")  # fmt: skip
    ax.set_title(f"Time to ready per LWS group, all Available after {rollout.total_s:.1f} s\n"
                 f"({what})", fontsize=9)  # fmt: skip
    ax.set_xlim(0, max(rollout.total_s, 0.1) * 1.15)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: Jupyter shows it once, as the cell's result
    return fig


def groups_per_zone(pods: pd.DataFrame) -> pd.DataFrame:
    """Per zone, from ``backend.groups()``: groups, groups with every pod ready, pods."""
    if pods.empty:
        return pd.DataFrame(columns=["zone", "groups", "groups_ready", "pods"])
    per_group = pods.groupby(["zone", "group"])["ready"].agg(lambda r: bool(r.astype(bool).all()))
    frame = (
        per_group.reset_index()
        .groupby("zone")
        .agg(groups=("group", "nunique"), groups_ready=("ready", "sum"))
    )
    frame["pods"] = pods.groupby("zone").size()
    return frame.reset_index()


# --- first requests through the gateway ------------------------------------------------------
async def _chat(
    url: str, model: str, headers: dict[str, str], count: int, max_tokens: int, timeout_s: float
) -> list[dict[str, Any]]:
    rows = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        for i in range(count):
            message = {"role": "user", "content": f"Say hello to zone #{i}."}
            body = {"model": model, "max_tokens": max_tokens, "messages": [message]}
            start = time.perf_counter()
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    text = await resp.text()
                    e2e_s = time.perf_counter() - start
                    data = json.loads(text) if resp.content_type == "application/json" else {}
                    usage = data.get("usage") or {}
                    choices = data.get("choices") or [{}]
                    rows.append({
                        "request": i, "status": resp.status,
                        "zone": resp.headers.get("x-lab-zone", ""),
                        "group": resp.headers.get("x-lab-group", ""),
                        "simulated": resp.headers.get("x-lab-simulated", "") == "true",
                        "simulated_gpu": resp.headers.get("x-lab-simulated-gpu", ""),
                        "e2e_ms": round(e2e_s * 1e3, 1),
                        "output_tokens": usage.get("completion_tokens"),
                        "reply": str((choices[0].get("message") or {}).get("content", ""))[:60]
                        or text[:60],
                    })  # fmt: skip
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise EndpointError(
                    f"{url}/v1/chat/completions: {exc or type(exc).__name__}; is the lab "
                    "applied and ready (backend.status())?"
                ) from None
    return rows


def first_requests(
    backend: Backend, count: int = 6, *, max_tokens: int = 16, timeout_s: float = 60.0
) -> pd.DataFrame:
    """Send ``count`` chat requests, one after another, through the gateway.

    Returns:
        One row per request: status, zone and group that served it (the gateway's
        ``x-lab-zone``/``x-lab-group`` headers), whether the engine is simulated (and which
        GPU), end-to-end latency (ms), output tokens and the start of the reply.

    Raises:
        EndpointError: the gateway could not be reached.
    """
    if count < 1 or count > 100:
        raise ValidationError(f"first_requests: count={count}; choose 1..100")
    endpoints = backend.endpoints()
    rows = run_sync(_chat(endpoints.gateway_url, endpoints.model, dict(endpoints.headers),
                          count, max_tokens, timeout_s))  # fmt: skip
    return pd.DataFrame(rows)


# --- checks ----------------------------------------------------------------------------------
def check_available(status: pd.DataFrame) -> pd.DataFrame:
    """Raise unless every LWS is Available with all its groups ready.

    Raises:
        ValidationError: names each LWS that is not, with its ready/desired groups.
    """
    if status.empty:
        raise ValidationError("no LeaderWorkerSet found; apply the lab first (watch_apply)")
    ok = _available(status) & (status["ready_replicas"] >= status["replicas"])
    problems = [f"{r.lws}: {r.ready_replicas}/{r.replicas} groups ready ({r.conditions})"
                for r in status[~ok].itertuples()]  # fmt: skip
    if problems:
        raise ValidationError(f"LWS not Available: {problems[0]}", problems)
    return status


def check_group_count(rollout: Rollout, rendered: str | Path, pods: pd.DataFrame) -> pd.DataFrame:
    """Raise unless replicas × zones groups came up, each with group-size pods.

    Compares the groups the rollout saw ready with the rendered replicas per LWS, and each live
    group's pods (``backend.groups()``) with the LWS size (leader + workers).

    Returns:
        Per LWS: rendered replicas, groups ready during apply, pods per live group.

    Raises:
        ValidationError: a count differs; the message names the LWS and both numbers.
    """
    expected = _expected(rendered)
    sizes = {o.name: int(o.data["spec"]["leaderWorkerTemplate"].get("size", 1))
             for o in _lws_objects(rendered)}  # fmt: skip
    ready = rollout.groups.dropna(subset=["ready_s"]).groupby("lws")["group"].nunique()
    pods_per_group: dict[str, list[int]] = {}
    for record in pods.groupby(["lws", "group"]).size().reset_index(name="n").to_dict("records"):
        pods_per_group.setdefault(str(record["lws"]), []).append(int(record["n"]))
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for lws, replicas in expected.items():
        got = int(ready.get(lws, 0))
        pod_counts = sorted(set(pods_per_group.get(lws, [])))
        rows.append({"lws": lws, "rendered_replicas": replicas, "groups_ready_at_apply": got,
                     "group_size": sizes[lws], "pods_per_live_group": pod_counts})  # fmt: skip
        if got != replicas:
            problems.append(f"{lws}: {got} groups ready at apply, rendered replicas {replicas}")
        if any(n != sizes[lws] for n in pod_counts):
            problems.append(f"{lws}: groups with {pod_counts} pods, LWS size {sizes[lws]}")
    total = sum(r["groups_ready_at_apply"] for r in rows)
    if total != rollout.expected_groups:
        problems.append(f"{total} groups in all zones, expected {rollout.expected_groups}")
    if problems:
        raise ValidationError(f"group count: {problems[0]}", problems)
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
        labels = {_LWS_LABEL + "name": str(pod.lws), _LWS_LABEL + "worker-index": suffix}
        chosen = [s.name for s in services if _selects((s.data.get("spec") or {}).get(
            "selector") or {}, labels)]  # fmt: skip
        rows.append({"zone": pod.zone, "pod": pod.pod, "role": pod.role,
                     "selected_by": ", ".join(chosen) or "(none)"})  # fmt: skip
    return pd.DataFrame(rows, columns=["zone", "pod", "role", "selected_by"])


def check_leader_only_service(selection: pd.DataFrame) -> pd.DataFrame:
    """Raise unless every leader is selected by exactly one Service and no worker by any.

    Raises:
        ValidationError: names the pods selected wrongly.
    """
    leaders = selection[selection["role"] == "leader"]
    workers = selection[selection["role"] == "worker"]
    problems = [f"leader {r['pod']} selected by {r['selected_by']}"
                for r in leaders.to_dict("records")
                if r["selected_by"] == "(none)" or "," in str(r["selected_by"])]  # fmt: skip
    problems += [f"worker {r['pod']} selected by {r['selected_by']} (workers serve no API)"
                 for r in workers.to_dict("records") if r["selected_by"] != "(none)"]  # fmt: skip
    if leaders.empty:
        problems.append("no leader pods listed; apply the lab first")
    if problems:
        raise ValidationError(f"Service selection: {problems[0]}", problems)
    return selection


# --- CLI -------------------------------------------------------------------------------------
def _cmd_plan(args: argparse.Namespace) -> int:
    rendered = Path(args.rendered) if args.rendered else render_lab(args.out)
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(deployment_plan(rendered).drop(columns=["file"]).to_string(index=False))
    return 0


def register(subparsers: Any) -> None:
    """Add ``labctl plan``: the table of what the lab deploys per zone."""
    plan = subparsers.add_parser("plan", help="list what the lab deploys (kind, zone, GPUs)")
    plan.add_argument("--rendered", help="a labctl render --out DIR folder (default: render now)")
    plan.add_argument("--out", help="where to render when --rendered is not given")
    plan.set_defaults(handler=_cmd_plan)
