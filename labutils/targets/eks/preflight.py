"""``labctl preflight --target eks``: is this cluster ready for the lab? One row per check."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labutils.config import LabConfig, load_config, manifests_dir
from labutils.errors import ClusterError
from labutils.kube.labels import GPU_RESOURCE, NODE_ZONE_LABEL
from labutils.targets.eks._connect import Connection, api_errors, connect, crd_hint

__all__ = ["preflight"]

_GPU = GPU_RESOURCE
_ZONE = NODE_ZONE_LABEL


def _row(check: str, ok: bool, detail: str, fix: str = "") -> dict[str, Any]:
    return {"check": check, "ok": ok, "detail": detail, "fix": "" if ok else fix}


def _served(conn: Connection, api_version: str, kind: str) -> tuple[bool, str]:
    try:
        conn.resource(api_version, kind)
    except ClusterError as exc:
        return False, str(exc)
    return True, f"{kind} {api_version} served"


def _groups(conn: Connection) -> set[str]:
    with api_errors("discovery /apis", conn):
        groups = client.ApisApi(conn.api_client).get_api_versions().groups or []
    return {g.name for g in groups}


def preflight(
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    *,
    config: LabConfig | None = None,
    namespace: str | None = None,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Check the cluster: API, CRDs, AWS Load Balancer Controller, GPU nodes per zone, quota.

    Returns:
        One row per check: check, ok, detail, fix (how to fix a failed check).

    Raises:
        ClusterError: the kubeconfig or context is wrong (nothing can be checked then).
    """
    if config is None:
        lab_yaml = manifests_dir() / "lab.yaml"
        config = load_config(lab_yaml) if lab_yaml.exists() else LabConfig()
    namespace = namespace or config.namespace
    conn = connect(kubeconfig, context, cache_dir=cache_dir)
    rows: list[dict[str, Any]] = []
    try:
        with api_errors("GET /version", conn):
            version = client.VersionApi(conn.api_client).get_code()
        rows.append(_row("API server", True, f"{conn.host} {version.git_version}"))
    except ClusterError as exc:
        rows.append(_row("API server", False, str(exc), "fix the connection, then rerun"))
        return pd.DataFrame(rows)

    for check, api_version, kind in (
        ("CRD LeaderWorkerSet", "leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
        ("CRD Gateway API Gateway", "gateway.networking.k8s.io/v1", "Gateway"),
        ("CRD Gateway API HTTPRoute", "gateway.networking.k8s.io/v1", "HTTPRoute"),
    ):
        ok, detail = _served(conn, api_version, kind)
        rows.append(_row(check, ok, detail, crd_hint(api_version)))

    groups = _groups(conn)
    keda = "keda.sh" in groups
    custom = "custom.metrics.k8s.io" in groups
    rows.append(
        _row(
            "autoscaling metrics (KEDA or custom metrics API)",
            keda or custom,
            ", ".join(n for n, ok in (("KEDA", keda), ("custom.metrics.k8s.io", custom)) if ok)
            or "neither keda.sh nor custom.metrics.k8s.io is served",
            "install prometheus-adapter (custom.metrics.k8s.io) for the HPAs, or KEDA",
        )
    )
    rows.append(_lb_controller(conn))
    rows.extend(_gpu_nodes(conn, config))
    rows.append(_quota(conn, config, namespace))
    return pd.DataFrame(rows, columns=["check", "ok", "detail", "fix"])


def _lb_controller(conn: Connection) -> dict[str, Any]:
    fix = (
        "install the AWS Load Balancer Controller (helm install aws-load-balancer-controller "
        "eks/aws-load-balancer-controller -n kube-system --set clusterName=CLUSTER)"
    )
    deployments = conn.resource("apps/v1", "Deployment")
    try:
        with api_errors("get Deployment kube-system/aws-load-balancer-controller", conn):
            try:
                dep = deployments.get(
                    name="aws-load-balancer-controller", namespace="kube-system"
                ).to_dict()
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return _row("AWS Load Balancer Controller", False, "not installed", fix)
    except ClusterError as exc:
        return _row("AWS Load Balancer Controller", False, str(exc), fix)
    ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
    return _row(
        "AWS Load Balancer Controller",
        ready > 0,
        f"kube-system/aws-load-balancer-controller {ready} ready",
        "the controller is installed but not ready: kubectl -n kube-system describe deploy "
        "aws-load-balancer-controller",
    )


def _gpu_nodes(conn: Connection, config: LabConfig) -> list[dict[str, Any]]:
    fix = (
        "add GPU capacity in this zone (Karpenter NodePool or node group with "
        f"{config.instance_type}) and the NVIDIA device plugin"
    )
    try:
        with api_errors("list Node", conn):
            nodes = conn.resource("v1", "Node").get().to_dict().get("items", [])
    except ClusterError as exc:
        return [_row("GPU nodes", False, str(exc), fix)]
    gpus: dict[str, int] = {}
    node_count: dict[str, int] = {}
    for node in nodes:
        zone = (node["metadata"].get("labels") or {}).get(_ZONE, "")
        count = int((node.get("status") or {}).get("allocatable", {}).get(_GPU, 0) or 0)
        if count:
            gpus[zone] = gpus.get(zone, 0) + count
            node_count[zone] = node_count.get(zone, 0) + 1
    rows = []
    for zone in config.zones:
        ok = gpus.get(zone, 0) > 0
        detail = f"{node_count.get(zone, 0)} nodes, {gpus.get(zone, 0)} {_GPU} allocatable"
        rows.append(_row(f"GPU nodes in {zone}", ok, detail, fix))
    return rows


def _quota(conn: Connection, config: LabConfig, namespace: str) -> dict[str, Any]:
    need = (
        len(config.zones)
        * config.replicas
        * config.tensor_parallel_size
        * config.pipeline_parallel_size
    )
    check = f"namespace {namespace} GPU quota"
    try:
        with api_errors(f"get Namespace {namespace}", conn):
            try:
                client.CoreV1Api(conn.api_client).read_namespace(namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return _row(
                    check,
                    False,
                    f"namespace {namespace} does not exist",
                    "labctl participants create N --rendered DIR, or apply the rendered cluster/",
                )
    except ClusterError as exc:
        return _row(check, False, str(exc), "use a context allowed to read the namespace")
    try:
        with api_errors(f"list ResourceQuota in {namespace}", conn):
            quotas = conn.resource("v1", "ResourceQuota").get(namespace=namespace).to_dict()
    except ClusterError as exc:
        return _row(check, False, str(exc), "labctl participants create / apply cluster/")
    hard = math.inf
    for quota in quotas.get("items", []):
        limits = (quota.get("spec") or {}).get("hard") or {}
        for key in (f"requests.{_GPU}", _GPU):
            if key in limits:
                hard = min(hard, float(limits[key]))
    if math.isinf(hard):
        return _row(check, True, f"no GPU quota (lab needs {need} GPUs)")
    return _row(
        check,
        hard >= need,
        f"quota {hard:g} {_GPU}, lab needs {need} (zones x replicas x TP x PP)",
        f"raise requests.{_GPU} in the namespace's ResourceQuota or lower replicas in lab.yaml",
    )
