"""``labctl preflight --target eks``: is this cluster ready for the lab? One row per check.

As the instructor (an unpinned context): the API, the CRDs (LWS, Gateway API, Envoy Gateway,
prometheus-operator, Karpenter), autoscaling metrics, the GatewayClass the Gateway names and
whether its controller accepted it, the StorageClass of the model cache, the NVIDIA device
plugin, the AWS Load Balancer Controller, GPU capacity per zone (GPU nodes, or a Karpenter
NodePool that launches them on demand: a Karpenter cluster has no GPU node before the first
group is scheduled), the lab namespace's Secrets and its GPU quota.

As a participant (a credential pinned to a namespace), only what that identity may read: the
API, the CRDs (discovery), autoscaling metrics and the quota of their namespace; the
cluster-wide rows say the instructor's preflight covers them (reading them would need the
cluster-wide access participants do not get).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labutils.config import LabConfig, load_config, manifests_dir
from labutils.errors import ClusterError
from labutils.kube.labels import GPU_RESOURCE, NODE_ZONE_LABEL
from labutils.manifests.settings import effective_config
from labutils.targets.eks._connect import Connection, api_errors, connect, crd_hint

__all__ = ["preflight"]

_EFS_PROVISIONER = "efs.csi.aws.com"
_DEVICE_PLUGIN = "app.kubernetes.io/name=nvidia-device-plugin"
_ADDONS = "labctl instructor addons --print"
_INSTRUCTOR_ONLY = "not readable by a participant; the instructor's preflight checks it"
_CRDS = (
    ("CRD LeaderWorkerSet", "leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
    ("CRD Gateway API Gateway", "gateway.networking.k8s.io/v1", "Gateway"),
    ("CRD Gateway API HTTPRoute", "gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("CRD Envoy Gateway BackendTrafficPolicy", "gateway.envoyproxy.io/v1alpha1",
     "BackendTrafficPolicy"),
    ("CRD prometheus-operator PodMonitor", "monitoring.coreos.com/v1", "PodMonitor"),
)  # fmt: skip


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
    """Check the cluster for the lab, as the identity of ``kubeconfig``/``context``.

    Returns:
        One row per check: check, ok, detail, fix (how to fix a failed check).

    Raises:
        ClusterError: the kubeconfig or context is wrong (nothing can be checked then).
    """
    if config is None:
        lab_yaml = manifests_dir() / "lab.yaml"
        config = load_config(lab_yaml) if lab_yaml.exists() else LabConfig()
    config = effective_config(config)
    conn = connect(kubeconfig, context, cache_dir=cache_dir)
    namespace = namespace or os.environ.get("LAB_NAMESPACE") or conn.namespace or config.namespace
    participant = conn.namespace is not None
    rows: list[dict[str, Any]] = []
    try:
        with api_errors("GET /version", conn):
            version = client.VersionApi(conn.api_client).get_code()
        who = f", as participant (namespace {conn.namespace})" if participant else ""
        rows.append(_row("API server", True, f"{conn.host} {version.git_version}{who}"))
    except ClusterError as exc:
        rows.append(_row("API server", False, str(exc), "fix the connection, then rerun"))
        return pd.DataFrame(rows)

    for check, api_version, kind in _CRDS:
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
            f"install prometheus-adapter (custom.metrics.k8s.io) or KEDA ({_ADDONS})",
        )
    )
    if participant:
        for check in ("GatewayClass", "StorageClass", "NVIDIA device plugin",
                      "AWS Load Balancer Controller", "GPU capacity", "Secrets"):  # fmt: skip
            rows.append(_row(check, True, _INSTRUCTOR_ONLY))
    else:
        rows.append(_gateway_class(conn, config.gateway_class_name))
        rows.append(_storage_class(conn, config.model_storage_class))
        rows.append(_device_plugin(conn))
        rows.append(_lb_controller(conn))
        rows.extend(_gpu_capacity(conn, config))
        rows.append(_secrets(conn, namespace))
    if participant and namespace != conn.namespace:
        rows.append(
            _row(
                f"namespace {conn.namespace} GPU quota",
                True,
                f"shared fleet in {namespace} (the instructor's): no GPUs of your own",
            )
        )
    else:  # fmt: skip
        rows.append(_quota(conn, config, namespace, check_namespace=not participant))
    return pd.DataFrame(rows, columns=["check", "ok", "detail", "fix"])


def _get_cluster(conn: Connection, api_version: str, kind: str, name: str) -> dict[str, Any]:
    resource = conn.resource(api_version, kind)
    with api_errors(f"get {kind} {name}", conn):
        try:
            return dict(resource.get(name=name).to_dict())
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise


def _gateway_class(conn: Connection, name: str) -> dict[str, Any]:
    check = f"GatewayClass {name}"
    fix = f"create it with its EnvoyProxy ({_ADDONS}): Envoy Gateway's Helm chart creates none"
    try:
        found = _get_cluster(conn, "gateway.networking.k8s.io/v1", "GatewayClass", name)
    except ClusterError as exc:
        return _row(check, False, str(exc), fix)
    if not found:
        return _row(check, False, "not found (the Gateway would never get an address)", fix)
    conditions = {c.get("type"): c for c in (found.get("status") or {}).get("conditions") or []}
    accepted = conditions.get("Accepted") or {}
    ok = accepted.get("status") == "True"
    detail = f"controller {found['spec'].get('controllerName')}, Accepted={accepted.get('status')}"
    if accepted.get("message"):
        detail += f" ({accepted['message']})"
    return _row(check, ok, detail, "is Envoy Gateway running? kubectl -n envoy-gateway-system "
                "get deploy envoy-gateway; its parametersRef EnvoyProxy must exist")  # fmt: skip


def _storage_class(conn: Connection, name: str) -> dict[str, Any]:
    check = f"StorageClass {name}"
    fix = f"install the EFS CSI driver and create the StorageClass ({_ADDONS})"
    try:
        found = _get_cluster(conn, "storage.k8s.io/v1", "StorageClass", name)
    except ClusterError as exc:
        return _row(check, False, str(exc), fix)
    if not found:
        return _row(check, False, "not found: the model-cache PVCs would stay Pending", fix)
    provisioner = str(found.get("provisioner", ""))
    return _row(
        check,
        provisioner == _EFS_PROVISIONER,
        f"provisioner {provisioner}",
        f"the cache is ReadWriteMany across nodes: use {_EFS_PROVISIONER} (or FSx for Lustre)",
    )


def _device_plugin(conn: Connection) -> dict[str, Any]:
    check = "NVIDIA device plugin"
    fix = f"install the NVIDIA device plugin DaemonSet ({_ADDONS})"
    try:
        with api_errors("list DaemonSet (all namespaces)", conn):
            items = (
                conn.resource("apps/v1", "DaemonSet")
                .get(label_selector=_DEVICE_PLUGIN)
                .to_dict()
                .get("items", [])
            )
    except ClusterError as exc:
        return _row(check, False, str(exc), fix)
    if not items:
        return _row(check, False, f"no DaemonSet labelled {_DEVICE_PLUGIN}", fix)
    ds = items[0]
    meta = ds["metadata"]
    # On a Karpenter cluster without GPU nodes yet it schedules 0 pods: that is fine.
    desired = int((ds.get("status") or {}).get("desiredNumberScheduled") or 0)
    ready = int((ds.get("status") or {}).get("numberReady") or 0)
    return _row(
        check,
        ready >= desired,
        f"{meta['namespace']}/{meta['name']}: {ready}/{desired} ready (one per GPU node)",
        f"kubectl -n {meta['namespace']} describe ds {meta['name']}",
    )


def _lb_controller(conn: Connection) -> dict[str, Any]:
    fix = f"install the AWS Load Balancer Controller ({_ADDONS})"
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


def _gpu_capacity(conn: Connection, config: LabConfig) -> list[dict[str, Any]]:
    fix = (
        "add GPU capacity in this zone: the rendered Karpenter NodePool vllm-gpu-<zone> "
        f"(labctl render; kubectl apply -f zones/<zone>/karpenter.yaml) for {config.instance_type}"
    )
    try:
        with api_errors("list Node", conn):
            nodes = conn.resource("v1", "Node").get().to_dict().get("items", [])
    except ClusterError as exc:
        return [_row("GPU capacity", False, str(exc), fix)]
    pools: dict[str, dict[str, Any]] = {}
    try:
        items = conn.resource("karpenter.sh/v1", "NodePool").get().to_dict().get("items", [])
    except (ClusterError, ApiException):
        items = []  # no Karpenter: only existing GPU nodes count
    for pool in items:
        for req in (pool.get("spec") or {}).get("template", {}).get("spec", {}).get(
            "requirements"
        ) or []:
            if req.get("key") == NODE_ZONE_LABEL and req.get("operator") == "In":
                for zone in req.get("values") or []:
                    pools[str(zone)] = pool
    gpus: dict[str, int] = {}
    node_count: dict[str, int] = {}
    for node in nodes:
        zone = (node["metadata"].get("labels") or {}).get(NODE_ZONE_LABEL, "")
        count = int((node.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE, 0) or 0)
        if count:
            gpus[zone] = gpus.get(zone, 0) + count
            node_count[zone] = node_count.get(zone, 0) + 1
    rows = []
    for zone in config.zones:
        detail = f"{node_count.get(zone, 0)} nodes, {gpus.get(zone, 0)} {GPU_RESOURCE} allocatable"
        pool = pools.get(zone)
        if pool:
            limit = ((pool.get("spec") or {}).get("limits") or {}).get(GPU_RESOURCE, "no limit")
            detail += (
                f"; Karpenter NodePool {pool['metadata']['name']} launches more on demand "
                f"(limit {limit} GPUs)"
            )
        rows.append(_row(f"GPU capacity in {zone}", gpus.get(zone, 0) > 0 or bool(pool),
                         detail, fix))  # fmt: skip
    return rows


def _secrets(conn: Connection, namespace: str) -> dict[str, Any]:
    check = f"Secrets in {namespace}"
    wanted = {"vllm-api-key": "api-key", "hf-token": "token"}
    core = client.CoreV1Api(conn.api_client)
    missing = []
    for name, key in wanted.items():
        try:
            with api_errors(f"get Secret {namespace}/{name}", conn):
                try:
                    secret = core.read_namespaced_secret(name, namespace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    missing.append(f"{name} (absent)")
                    continue
        except ClusterError as exc:
            return _row(check, False, str(exc), "use a context that may read the namespace")
        if not (secret.data or {}).get(key):
            missing.append(f"{name} (no key {key})")
    return _row(
        check,
        not missing,
        "vllm-api-key, hf-token present" if not missing else "missing: " + ", ".join(missing),
        f"kubectl -n {namespace} create secret generic vllm-api-key --from-literal=api-key=... "
        f"and hf-token --from-literal=token=... (labctl participants create makes both)",
    )


def _quota(
    conn: Connection, config: LabConfig, namespace: str, *, check_namespace: bool
) -> dict[str, Any]:
    need = (
        len(config.zones)
        * config.replicas
        * config.tensor_parallel_size
        * config.pipeline_parallel_size
    )
    check = f"namespace {namespace} GPU quota"
    if check_namespace:
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
                        "labctl participants create N --out DIR, or apply the rendered cluster/",
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
        for key in (f"requests.{GPU_RESOURCE}", GPU_RESOURCE):
            if key in limits:
                hard = min(hard, float(limits[key]))
    if math.isinf(hard):
        return _row(check, True, f"no GPU quota (lab needs {need} GPUs)")
    return _row(
        check,
        hard >= need,
        f"quota {hard:g} {GPU_RESOURCE}, lab needs {need} (zones x replicas x TP x PP)",
        f"raise requests.{GPU_RESOURCE} in the namespace's ResourceQuota or lower replicas in "
        "lab.yaml",
    )
