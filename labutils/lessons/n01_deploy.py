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

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd

from labutils import catalog
from labutils._aio import run_sync
from labutils.config import lab_target
from labutils.errors import EndpointError, ValidationError
from labutils.manifests.plan import (
    _container,
    _gpus,
    _instance_type,
    _lws_objects,
    _serve_args,
    _template,
    _zone,
)
from labutils.protocol import Backend
from labutils.targets.rollout import Rollout, _available, _expected

__all__ = [
    "check_available",
    "check_group_count",
    "check_leader_only_service",
    "check_parallel_layout",
    "first_requests",
    "groups_per_zone",
    "lab_summary",
]


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
