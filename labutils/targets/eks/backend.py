"""The EKS backend: the lab's operations on a real cluster through the ``kubernetes`` client.

Same method names and return types as the local twin (:class:`labutils.protocol.Backend`).
Custom resources (LeaderWorkerSet, Gateway API) go through the dynamic client; writes are
server-side apply with field manager ``labutils``.

Two scopes. ``cluster`` (an instructor's unpinned kubeconfig context) applies everything the
render holds, cluster-scoped objects included. ``namespace`` (a participant: a kubeconfig
context pinned to a namespace, or a pod's ServiceAccount) touches only the lab's own kinds in
that one namespace, exactly what ``participant/access.yaml``'s Role grants; the namespace
itself, its RBAC, quota, NetworkPolicies and Secrets are the instructor's
(``labctl participants create``). Two ways to reach the engines: ``in-cluster`` (in a pod:
cluster DNS names) or ``api-server proxy`` (a laptop: ``.../proxy`` URLs through the API
server); :attr:`EksBackend.access` says which.
"""

from __future__ import annotations

import copy
import math
import os
import re
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from labutils._progress import progress_bar, show_progress
from labutils.config import LabConfig, load_config, manifests_dir
from labutils.errors import ClusterError, ConfigError, EndpointError, WaitTimeout
from labutils.kube.labels import (
    LWS_GROUP_INDEX_LABEL,
    LWS_NAME_LABEL,
    LWS_WORKER_INDEX_LABEL,
    NODE_ZONE_LABEL,
)
from labutils.kube.objects import LAB_LABEL, LAB_SELECTOR, ZONE_LABEL, load_rendered
from labutils.manifests.schemas import CLUSTER_SCOPED_KINDS
from labutils.protocol import Endpoints, GroupEndpoint, MetricsScrape, PrometheusApi
from labutils.targets.eks._connect import FIELD_MANAGER, Connection, api_errors, connect
from labutils.targets.eks.prometheus import cluster_prometheus
from labutils.vllm_args import parse_vllm_serve

__all__ = ["INSTRUCTOR_KINDS", "RESET_KINDS", "SCOPES", "EksBackend"]

LWS_API = "leaderworkerset.x-k8s.io/v1"

# What ``reset`` deletes (when labelled as the lab's), most dependent first. Namespaces, RBAC
# and quotas are the participants' (``labctl participants delete``), so reset keeps them.
RESET_KINDS: tuple[tuple[str, str], ...] = (
    ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    (LWS_API, "LeaderWorkerSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
# Kinds a participant (namespace scope) never writes: the instructor's, applied by
# `labctl participants create` (their namespace, identity, quota, network rules, secrets).
INSTRUCTOR_KINDS = frozenset(
    {
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "Secret",
        "Deployment",
        "ScaledObject",
    }
)
SCOPES = ("cluster", "namespace")
_API_KEY_ENV = "VLLM_API_KEY"


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def _conditions_text(obj: dict[str, Any]) -> str:
    conditions = obj.get("status", {}).get("conditions") or []
    if not conditions:
        return "no conditions yet"
    return ", ".join(
        f"{c.get('type')}={c.get('status')}"
        + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") else "")
        for c in conditions
    )


def _is_available(obj: dict[str, Any]) -> bool:
    # The condition lags a spec change (e.g. a scale-up), so also require every wanted group
    # to be counted ready.
    status = obj.get("status") or {}
    wanted = int((obj.get("spec") or {}).get("replicas", 1))
    return int(status.get("readyReplicas") or 0) >= wanted and any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _leader_container(lws: dict[str, Any]) -> dict[str, Any]:
    template = lws.get("spec", {}).get("leaderWorkerTemplate", {})
    pod_template = template.get("leaderTemplate") or template.get("workerTemplate") or {}
    containers = pod_template.get("spec", {}).get("containers") or [{}]
    return dict(containers[0])


# The HPA controller's rescale event (pkg/controller/podautoscaler/horizontal.go):
# reason SuccessfulRescale, message "New size: %d; reason: %s".
_RESCALE_MESSAGE = re.compile(r"New size: (\d+); reason: (.*)", re.S)
HPA_EVENT_COLUMNS = (
    "time_s", "kind", "object", "hpa", "source", "current_replicas", "metric_replicas",
    "stabilized_replicas", "desired_replicas", "rescale", "reason", "limit_reason", "message",
)  # fmt: skip


def _epoch_s(stamp: Any) -> float:
    """Seconds since the epoch of an API timestamp (RFC 3339 text or datetime); NaN if unset."""
    if stamp is None or stamp == "":
        return math.nan
    return float(pd.Timestamp(stamp).timestamp())


def _event_times_s(event: dict[str, Any]) -> list[float]:
    # core/v1 Events aggregate repeats: count + first/lastTimestamp; occurrences between the
    # first and the last are not kept by the API, so only those two are reported.
    first = _epoch_s(event.get("firstTimestamp"))
    last = _epoch_s(event.get("lastTimestamp"))
    if math.isnan(last):
        last = _epoch_s(
            event.get("eventTime") or event.get("metadata", {}).get("creationTimestamp")
        )
    if math.isnan(first):
        first = last
    count = int(event.get("count") or 1)
    return [first] if count <= 1 or first == last else [first, last]


def _quantity(value: Any) -> float:
    return math.nan if value is None else float(parse_quantity(value))


def _hpa_metric(entry: dict[str, Any]) -> tuple[str, float, float]:
    """(name, current, target) of one HPA ``spec.metrics``/``status.currentMetrics`` entry."""
    kind = str(entry.get("type", ""))
    source = entry.get(kind[:1].lower() + kind[1:]) or {}
    name = str((source.get("metric") or {}).get("name") or source.get("name") or kind.lower())
    target = source.get("target") or {}
    current = source.get("current") or {}

    def pick(values: dict[str, Any]) -> float:
        if "averageUtilization" in values:
            return float(values["averageUtilization"])
        return _quantity(values.get("averageValue", values.get("value")))

    return name, pick(current), pick(target)


def _hpa_condition(hpa: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (hpa.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


# Where a cold group is, from its pods (least advanced pod first): the phases an instructor
# sees on a Karpenter cluster, where the GPU node itself is created on demand.
PHASE_NODE = "waiting for a GPU node (Karpenter launches one)"
PHASE_PULL = "starting containers (image pull)"
PHASE_LOAD = "loading the model (startup probe)"
PHASE_READY = "ready"
_PHASE_RANK = {PHASE_NODE: 0, PHASE_PULL: 1, PHASE_LOAD: 2, PHASE_READY: 3}
_PULLING = {"ContainerCreating", "PodInitializing"}


def _api_key() -> str:
    """``$VLLM_API_KEY``, else the file ``$VLLM_API_KEY_FILE`` names (a mounted Secret)."""
    key = os.environ.get(_API_KEY_ENV, "")
    path = os.environ.get(_API_KEY_ENV + "_FILE")
    if not key and path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"{_API_KEY_ENV}_FILE={path}: cannot read the API key ({exc.strerror}); is the "
                "vllm-api-key Secret mounted?"
            ) from None
    return key


def pod_phase(pod: dict[str, Any]) -> str:
    """The start-up phase of one pod: node, image, model, ready, or the error it is stuck on."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return PHASE_READY
    if not (pod.get("spec") or {}).get("nodeName"):
        scheduled = conditions.get("PodScheduled") or {}
        reason = scheduled.get("reason")
        if reason and reason != "Unschedulable":
            return f"not scheduled ({reason})"
        return PHASE_NODE
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in _PULLING:
            return f"{waiting.get('reason')}: {waiting.get('message') or 'see pod events'}"
        if container.get("state", {}).get("running") is not None:
            return PHASE_LOAD
    return PHASE_PULL


def _least_advanced(phases: Iterable[str]) -> str:
    found = list(phases)
    if not found:
        return "no pods yet (the LWS controller creates them)"
    errors = [p for p in found if p not in _PHASE_RANK]
    return errors[0] if errors else min(found, key=lambda p: _PHASE_RANK[p])


class EksBackend:
    """The lab on a real cluster (``LAB_TARGET=eks``).

    Args:
        kubeconfig: kubeconfig file (default ``$KUBECONFIG`` or ``~/.kube/config``; in a pod
            without one, the service account).
        context: kubeconfig context (default: its current context).
        namespace: lab namespace (default: ``namespace`` from the lab config, ``vllm-lab``).
        rendered_dir: default folder for :meth:`apply` (``labctl render --out DIR``).
        config: the lab config (default: ``manifests/lab.yaml`` when present).
        poll_s: how often waits re-read status.
        cache_dir: where the dynamic client caches discovery.
    """

    target = "eks"

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        *,
        namespace: str | None = None,
        rendered_dir: str | Path | None = None,
        config: LabConfig | None = None,
        poll_s: float = 2.0,
        cache_dir: Path | None = None,
        scope: str | None = None,
    ) -> None:
        if config is None:
            lab_yaml = manifests_dir() / "lab.yaml"
            config = load_config(lab_yaml) if lab_yaml.exists() else LabConfig()
        self.config = config
        self.rendered_dir = Path(rendered_dir) if rendered_dir else None
        self.poll_s = poll_s
        self.conn: Connection = connect(kubeconfig, context, cache_dir=cache_dir)
        # $LAB_NAMESPACE (a participant's JupyterLab sets it), else the namespace the credential
        # is pinned to (as kubectl would use), else lab.yaml's.
        self.namespace = (
            namespace or os.environ.get("LAB_NAMESPACE") or self.conn.namespace or config.namespace
        )
        chosen = (
            scope
            or os.environ.get("LAB_EKS_SCOPE")
            or ("namespace" if self.conn.namespace else "cluster")
        )
        if chosen not in SCOPES:
            raise ConfigError(f"scope {chosen!r}; choose one of: {', '.join(SCOPES)}")
        self.scope = chosen
        # A participant watching the instructor's shared fleet writes nothing there.
        self.read_only = chosen == "namespace" and self.namespace != self.conn.namespace

    @property
    def access(self) -> str:
        """How the engines are reached: ``in-cluster`` (cluster DNS), ``vpc`` (load balancer
        addresses, from a machine inside the VPC: ``LAB_EKS_REACH=vpc``) or
        ``api-server proxy`` (a laptop: the internal NLBs are not reachable from there)."""
        if self.conn.in_cluster:
            return "in-cluster"
        return "vpc" if os.environ.get("LAB_EKS_REACH") == "vpc" else "api-server proxy"

    # ------------------------------------------------------------ low-level helpers
    def _list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        resource = self.conn.resource(api_version, kind)
        where = f" in {namespace}" if namespace else ""
        with api_errors(f"list {kind}{where}", self.conn):
            result = resource.get(
                namespace=namespace, label_selector=selector, field_selector=field_selector
            )
        return [dict(item) for item in result.to_dict().get("items", [])]

    def _get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        resource = self.conn.resource(api_version, kind)
        with api_errors(f"get {kind} {namespace}/{name}", self.conn):
            try:
                return dict(resource.get(name=name, namespace=namespace).to_dict())
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def _lws(self) -> list[dict[str, Any]]:
        items = self._list(LWS_API, "LeaderWorkerSet", self.namespace, LAB_SELECTOR)
        return sorted(items, key=lambda o: o["metadata"]["name"])

    @staticmethod
    def _zone_of(obj: dict[str, Any]) -> str:
        labels = obj.get("metadata", {}).get("labels") or {}
        return str(labels.get(ZONE_LABEL, ""))

    # ------------------------------------------------------------ Backend protocol
    def apply(
        self,
        rendered_dir: Path | None = None,
        *,
        wait: bool = True,
        timeout_s: float = 900.0,
        objects: Iterable[dict[str, Any]] | None = None,
        force: bool = False,
    ) -> pd.DataFrame:
        """Server-side apply the rendered manifests (field manager ``labutils``).

        In ``namespace`` scope only the lab's own namespaced kinds are applied, into the
        backend's namespace; cluster-scoped objects, objects of other namespaces and the
        instructor's kinds (:data:`INSTRUCTOR_KINDS`) are listed as skipped. An existing
        LeaderWorkerSet that an HPA or ScaledObject scales is applied *without*
        ``spec.replicas``: the autoscaler owns that field after creation, and claiming it again
        would be a field conflict (Kubernetes server-side apply, "transferring ownership").

        Args:
            rendered_dir: a ``labctl render --out DIR`` folder (default: the backend's).
            wait: return only when every LWS is Available (see :meth:`wait_ready`).
            timeout_s: how long to wait.
            objects: apply these dicts instead of a folder.
            force: take over fields another manager owns.

        Returns:
            One row per object: kind, namespace, name, resource_version, generation, action.

        Raises:
            ClusterError: a CRD is missing, access is forbidden, or a field conflict (409).
        """
        source: Any = objects if objects is not None else (rendered_dir or self.rendered_dir)
        if source is None:
            raise ConfigError(
                "apply needs the rendered manifests: pass rendered_dir=DIR (labctl render "
                "--out DIR) or objects=[...]"
            )
        loaded = load_rendered(source, namespace=self.namespace)
        lab_namespaces = {self.namespace} | {
            o["metadata"]["name"] for o in loaded if o.get("kind") == "Namespace"
        }
        scaled = {
            str(((o.get("spec") or {}).get("scaleTargetRef") or {}).get("name"))
            for o in loaded
            if o.get("kind") in ("HorizontalPodAutoscaler", "ScaledObject")
        }
        rows = []
        for obj in loaded:
            meta = obj["metadata"]
            skip = self._skip_reason(obj, lab_namespaces)
            if not skip and self.read_only:
                skip = f"shared fleet in {self.namespace}: the instructor deploys it"
            if skip:
                rows.append(
                    {"kind": obj["kind"], "namespace": meta.get("namespace", ""),
                     "name": meta["name"], "resource_version": None, "generation": None,
                     "action": f"skipped: {skip}"}
                )  # fmt: skip
                continue
            resource = self.conn.resource(obj["apiVersion"], obj["kind"])
            namespace = meta.get("namespace") if resource.namespaced else None
            if namespace and self.scope == "namespace":
                namespace = meta["namespace"] = self.namespace
            action = "applied"
            autoscaled = obj["kind"] == "LeaderWorkerSet" and meta["name"] in scaled
            if autoscaled and self._get(
                obj["apiVersion"], obj["kind"], meta["name"], str(namespace)
            ):
                obj = copy.deepcopy(obj)
                obj.get("spec", {}).pop("replicas", None)
                action = "applied (spec.replicas left to the autoscaler)"
            with api_errors(f"apply {_ref(obj)}", self.conn):
                live = resource.server_side_apply(
                    body=obj,
                    name=meta["name"],
                    namespace=namespace,
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True if force else None,
                ).to_dict()
            rows.append(
                {
                    "kind": obj["kind"],
                    "namespace": namespace or "",
                    "name": meta["name"],
                    "resource_version": live["metadata"].get("resourceVersion"),
                    "generation": live["metadata"].get("generation"),
                    "action": action,
                }
            )
        frame = pd.DataFrame(
            rows,
            columns=["kind", "namespace", "name", "resource_version", "generation", "action"],
        )
        applied_lws = [r for r in rows if r["kind"] == "LeaderWorkerSet"]
        if wait and (self.read_only or any(r["action"].startswith("applied") for r in applied_lws)):
            self.wait_ready(timeout_s=timeout_s)
        return frame

    def _skip_reason(self, obj: dict[str, Any], lab_namespaces: set[str]) -> str:
        if self.scope == "cluster":
            return ""
        kind = str(obj.get("kind"))
        namespace = (obj.get("metadata") or {}).get("namespace")
        if kind in CLUSTER_SCOPED_KINDS:
            return "cluster-scoped (the instructor's)"
        if kind in INSTRUCTOR_KINDS:
            return "the instructor's (labctl participants create)"
        if namespace and namespace not in lab_namespaces:
            return f"namespace {namespace} is not the lab's"
        return ""

    def status(self) -> pd.DataFrame:
        """One row per LWS: zone, lws, replicas, ready_replicas, updated_replicas, available,
        phase (where its least advanced pod is: GPU node, image pull, model load, ready),
        conditions."""
        items = self._lws()
        phases = self._phases([o["metadata"]["name"] for o in items]) if items else {}
        rows = []
        for lws in items:
            status = lws.get("status") or {}
            name = lws["metadata"]["name"]
            available = _is_available(lws)
            rows.append(
                {
                    "zone": self._zone_of(lws),
                    "lws": name,
                    "replicas": int(lws.get("spec", {}).get("replicas", 1)),
                    "ready_replicas": int(status.get("readyReplicas") or 0),
                    "updated_replicas": int(status.get("updatedReplicas") or 0),
                    "available": available,
                    "phase": PHASE_READY if available else phases.get(name, ""),
                    "conditions": _conditions_text(lws),
                }
            )
        columns = [
            "zone",
            "lws",
            "replicas",
            "ready_replicas",
            "updated_replicas",
            "available",
            "phase",
            "conditions",
        ]
        return pd.DataFrame(rows, columns=columns)

    def _phases(self, names: list[str]) -> dict[str, str]:
        pods = self._list("v1", "Pod", self.namespace, LWS_NAME_LABEL)
        by_lws: dict[str, list[str]] = {n: [] for n in names}
        for pod in pods:
            name = (pod["metadata"].get("labels") or {}).get(LWS_NAME_LABEL, "")
            if name in by_lws:
                by_lws[name].append(pod_phase(pod))
        return {name: _least_advanced(found) for name, found in by_lws.items()}

    def wait_ready(self, timeout_s: float = 900.0) -> pd.DataFrame:
        """Wait until every lab LWS is ``Available``; the progress bar names the phase.

        The phase is the least advanced pod's: waiting for a GPU node, pulling the image,
        loading the model, or the error a pod is stuck on (image pull, missing Secret...).

        Raises:
            WaitTimeout: names the first LWS not Available, its phase, its conditions and
                recent events.
        """
        deadline = time.monotonic() + timeout_s
        with progress_bar(total=0, desc="LWS groups ready", unit="group", leave=False) as bar:
            while True:
                frame = self.status()
                if frame.empty:
                    raise ClusterError(
                        f"no LeaderWorkerSet labelled {LAB_SELECTOR} in namespace "
                        f"{self.namespace}; apply the rendered manifests first"
                    )
                show_progress(bar, int(frame["ready_replicas"].sum()), int(frame["replicas"].sum()))
                pending = frame[~frame["available"].astype(bool)]
                if pending.empty:
                    return frame
                first = pending.iloc[0]
                bar.set_description(f"LWS groups ready ({first['lws']}: {first['phase']})")
                if time.monotonic() >= deadline:
                    name = str(first["lws"])
                    raise WaitTimeout(
                        f"LeaderWorkerSet {self.namespace}/{name} not Available after "
                        f"{timeout_s:g} s, {first['phase']}: {first['conditions']}; last events: "
                        f"{self._last_events(name)}; check GPU nodes (labctl preflight "
                        "--target eks) and pod events"
                    )
                time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))

    def _last_events(self, name_prefix: str, limit: int = 3) -> str:
        try:
            frame = self.events()
        except ClusterError as exc:
            return f"(events unavailable: {exc})"
        frame = frame[frame["object"].str.split("/").str[-1].str.startswith(name_prefix)]
        if frame.empty:
            return "none"
        frame = frame.sort_values(["type", "time"], ascending=[False, False]).head(limit)
        return "; ".join(f"{r.type} {r.reason} {r.object}: {r.message}" for r in frame.itertuples())

    def groups(self) -> pd.DataFrame:
        """One row per pod: zone, lws, group, pod, role, node, ready, restarts, phase."""
        pods = self._list("v1", "Pod", self.namespace, LWS_NAME_LABEL)
        zones_by_node = self._node_zones()
        rows = []
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            lws = labels.get(LWS_NAME_LABEL, "")
            group_index = labels.get(LWS_GROUP_INDEX_LABEL, "")
            worker_index = labels.get(LWS_WORKER_INDEX_LABEL, "")
            status = pod.get("status") or {}
            node = (pod.get("spec") or {}).get("nodeName") or ""
            statuses = status.get("containerStatuses") or []
            rows.append(
                {
                    "zone": labels.get(ZONE_LABEL) or zones_by_node.get(node, ""),
                    "lws": lws,
                    "group": f"{lws}-{group_index}",
                    "pod": pod["metadata"]["name"],
                    "role": "leader" if worker_index == "0" else "worker",
                    "node": node,
                    "ready": any(
                        c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or []
                    ),
                    "restarts": sum(int(c.get("restartCount") or 0) for c in statuses),
                    "phase": status.get("phase", ""),
                }
            )
        columns = ["zone", "lws", "group", "pod", "role", "node", "ready", "restarts", "phase"]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.sort_values(["zone", "lws", "group", "role", "pod"]).reset_index(drop=True)

    def _node_zones(self) -> dict[str, str]:
        # A participant may not list nodes (nothing cluster-wide); the pods' zone label
        # (rendered into every LWS template) is enough there.
        if self.scope == "namespace":
            return {}
        try:
            nodes = self._list("v1", "Node", None)
        except ClusterError:
            return {}
        return {
            n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(NODE_ZONE_LABEL, "")
            for n in nodes
        }

    def scale(self, lws: str, replicas: int) -> None:
        """Set the number of groups of LWS ``lws`` through its ``scale`` subresource.

        Raises:
            ClusterError: the LWS does not exist (names the ones that do), or 403/422.
        """
        if self.read_only:
            raise ClusterError(
                f"scale LeaderWorkerSet {self.namespace}/{lws}: the shared fleet is the "
                "instructor's (lab.yaml profile shared-fleet); ask them to scale it"
            )
        resource = self.conn.resource(LWS_API, "LeaderWorkerSet")
        scale = resource.subresources["scale"]
        try:
            with api_errors(f"scale LeaderWorkerSet {self.namespace}/{lws}", self.conn):
                self.conn.dynamic.patch(
                    scale,
                    body={"spec": {"replicas": int(replicas)}},
                    name=lws,
                    namespace=self.namespace,
                    content_type="application/merge-patch+json",
                    # its own manager, so a later apply names who changed spec.replicas
                    field_manager=f"{FIELD_MANAGER}-scale",
                )
        except ClusterError as exc:
            if ": not found:" in str(exc):
                names = [o["metadata"]["name"] for o in self._lws()]
                raise ClusterError(
                    f"LeaderWorkerSet {self.namespace}/{lws} not found; choose one of: "
                    f"{', '.join(names) or '(none applied yet)'}"
                ) from None
            raise

    def _proxy_url(self, kind: str, name: str, port: int | str) -> str:
        return (
            f"{self.conn.host.rstrip('/')}/api/v1/namespaces/{self.namespace}/{kind}/"
            f"{name}:{port}/proxy"
        )

    def _leader_port(self, lws: dict[str, Any]) -> int:
        container = _leader_container(lws)
        for port in container.get("ports") or []:
            if port.get("name") == "http" or len(container.get("ports") or []) == 1:
                return int(port["containerPort"])
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        try:
            return parse_vllm_serve(argv).port if argv else 8000
        except Exception:  # not a vllm serve line: vLLM's default port
            return 8000

    def _served_model(self, items: list[dict[str, Any]]) -> str:
        for lws in items:
            container = _leader_container(lws)
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            try:
                args = parse_vllm_serve(argv)
            except Exception:
                continue
            return args.served_model_name or args.model
        return self.config.served_model_name

    def endpoints(self) -> Endpoints:
        """Gateway, per-zone and per-group URLs, for where this code runs (:attr:`access`).

        In a pod (``in-cluster``): the Gateway's address, and cluster DNS names for the zone
        Services (``vllm-<zone>-api.<ns>.svc.cluster.local``) and the group leaders
        (``<leader>.<lws>.<ns>.svc.cluster.local``, the LWS headless Service); ``headers``
        carry ``$VLLM_API_KEY``. On a laptop (``api-server proxy``): the Gateway's and zone
        NLBs' addresses when they have one (reachable only from inside the VPC), else the
        API-server service proxy; groups always through the API-server pod proxy. The API
        server drops the ``Authorization`` header after authenticating, so vLLM's ``/v1``
        behind ``--api-key`` answers 401 through the proxy: requests need the in-cluster
        JupyterLab (``/health`` and ``/metrics`` work either way).
        """
        items = self._lws()
        if not items:
            raise EndpointError(
                f"no LeaderWorkerSet labelled {LAB_SELECTOR} in {self.namespace} at "
                f"{self.conn.host}; apply the rendered manifests first"
            )
        in_cluster = self.conn.in_cluster
        in_vpc = in_cluster or self.access == "vpc"
        pods = self.groups()
        group_eps = []
        for lws in items:
            name = lws["metadata"]["name"]
            port = self._leader_port(lws)
            leaders = pods[(pods["lws"] == name) & (pods["role"] == "leader")]
            for row in leaders.itertuples():
                url = (
                    f"http://{row.pod}.{name}.{self.namespace}.svc.cluster.local:{port}"
                    if in_cluster
                    else self._proxy_url("pods", str(row.pod), port)
                )
                group_eps.append(
                    GroupEndpoint(
                        zone=str(row.zone) or self._zone_of(lws),
                        lws=name,
                        group=str(row.group),
                        url=url,
                        ready=bool(row.ready),
                    )
                )
        zone_urls: dict[str, str] = {}
        for lws in items:
            zone = self._zone_of(lws) or lws["metadata"]["name"]
            service = self._get("v1", "Service", f"{lws['metadata']['name']}-api", self.namespace)
            if service is None:
                continue
            ports = (service.get("spec") or {}).get("ports") or [{"port": 80}]
            port = int(ports[0].get("port", 80))
            svc_name = service["metadata"]["name"]
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            if in_cluster:
                zone_urls[zone] = f"http://{svc_name}.{self.namespace}.svc.cluster.local:{port}"
            elif ingress and in_vpc:
                host = ingress[0].get("hostname") or ingress[0].get("ip")
                zone_urls[zone] = f"http://{host}:{port}"
            else:
                zone_urls[zone] = self._proxy_url("services", svc_name, port)
        # The gateway's NLB is internal (the EnvoyProxy `labctl instructor addons` creates).
        gateway_url = self._gateway_url() if in_vpc else ""
        via_proxy = not gateway_url
        if via_proxy:
            first = next(iter(zone_urls.values()), group_eps[0].url if group_eps else "")
            why = "has no address yet" if in_vpc else "is an internal NLB, unreachable from here"
            warnings.warn(
                f"Gateway {self.namespace}/vllm-gateway {why}; gateway_url is the first zone's "
                f"URL ({first}) and bypasses the gateway (run in the in-cluster JupyterLab, or "
                "set LAB_EKS_REACH=vpc inside the VPC)",
                stacklevel=2,
            )
            gateway_url = first
            via_proxy = "/proxy" in first
        return Endpoints(
            gateway_url=gateway_url,
            model=self._served_model(items),
            zone_urls=zone_urls,
            groups=tuple(group_eps),
            headers=self._client_headers(via_proxy),
        )

    def _client_headers(self, via_proxy: bool) -> dict[str, str]:
        # The cluster credential goes only to the API server (proxy URLs), never to a load
        # balancer or a pod; anything reached directly gets the vLLM API key, if one is set.
        if via_proxy:
            return self.proxy_headers()
        api_key = _api_key()
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def proxy_headers(self) -> dict[str, str]:
        """Headers for the group URLs: the kubeconfig's credential for API-server proxy URLs,
        the vLLM API key for cluster DNS names (in-cluster)."""
        if self.conn.in_cluster:
            return self._client_headers(via_proxy=False)
        return self.conn.auth_headers()

    def _gateway_url(self) -> str:
        try:
            gateway = self._get(
                "gateway.networking.k8s.io/v1", "Gateway", "vllm-gateway", self.namespace
            )
        except ClusterError:
            return ""
        if not gateway:
            return ""
        addresses = (gateway.get("status") or {}).get("addresses") or []
        listeners = (gateway.get("spec") or {}).get("listeners") or [{"port": 80}]
        if addresses:
            port = int(listeners[0].get("port", 80))
            scheme = "https" if listeners[0].get("protocol") == "HTTPS" else "http"
            suffix = "" if (scheme, port) in (("http", 80), ("https", 443)) else f":{port}"
            return f"{scheme}://{addresses[0]['value']}{suffix}"
        return ""

    def scrape_metrics(self) -> list[MetricsScrape]:
        """Scrape every ready leader's ``/metrics`` once through the API-server pod proxy.

        A failed scrape is returned with ``error`` set (and a warning), never as empty data.
        """
        core = client.CoreV1Api(self.conn.api_client)
        ports = {o["metadata"]["name"]: self._leader_port(o) for o in self._lws()}
        pods = self.groups()
        leaders = pods[(pods["role"] == "leader") & pods["ready"]]
        scrapes = []
        for row in leaders.itertuples():
            target = f"{row.pod}:{ports.get(str(row.lws), 8000)}"
            try:
                with api_errors(f"scrape pods/{target}/proxy/metrics", self.conn):
                    text = core.connect_get_namespaced_pod_proxy_with_path(
                        name=target, namespace=self.namespace, path="metrics"
                    )
                scrapes.append(
                    MetricsScrape(
                        zone=str(row.zone), group=str(row.group), time_s=time.time(), text=str(text)
                    )
                )
            except ClusterError as exc:
                warnings.warn(f"metrics scrape failed: {exc}", stacklevel=2)
                scrapes.append(
                    MetricsScrape(
                        zone=str(row.zone),
                        group=str(row.group),
                        time_s=time.time(),
                        text="",
                        error=str(exc),
                    )
                )
        return scrapes

    def prometheus(self) -> PrometheusApi:
        """The cluster's Prometheus (``$LAB_PROMETHEUS_URL``, in-cluster DNS or the API-server
        service proxy to ``monitoring/prometheus-operated:web``; see
        :mod:`labutils.targets.eks.prometheus`)."""
        return cluster_prometheus(self.conn)

    def events(self) -> pd.DataFrame:
        """Recent events in the lab namespace: time, type, reason, object, message, count."""
        items = self._list("v1", "Event", self.namespace)
        rows = []
        for event in items:
            involved = event.get("involvedObject") or {}
            rows.append(
                {
                    "time": event.get("lastTimestamp")
                    or event.get("eventTime")
                    or event.get("metadata", {}).get("creationTimestamp")
                    or "",
                    "type": event.get("type", ""),
                    "reason": event.get("reason", ""),
                    "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
                    "message": event.get("message", ""),
                    "count": int(event.get("count") or 1),
                }
            )
        columns = ["time", "type", "reason", "object", "message", "count"]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.sort_values("time").reset_index(drop=True)

    def hpa_events(self) -> pd.DataFrame:
        """The HPAs' rescales (from their events) and current status, as the twin's columns.

        One row per ``SuccessfulRescale`` event (``desired_replicas`` from "New size: N",
        ``current_replicas`` the size of the HPA's previous rescale, NaN before the first one
        seen) and one ``status`` row per HPA read now (``currentReplicas``, ``desiredReplicas``,
        ``currentMetrics``, the ``ScalingActive``/``ScalingLimited`` conditions). A cluster does
        not expose each sync's per-pod inputs or recommendations: ``metric_replicas``,
        ``stabilized_replicas`` and the ``<metric>:ready_pods``-style columns are NaN.

        Raises:
            ClusterError: the HPAs or events cannot be listed (API error or RBAC).
        """
        hpas = self._list("autoscaling/v2", "HorizontalPodAutoscaler", self.namespace)
        events = self._list("v1", "Event", self.namespace, field_selector=(
            "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale"))  # fmt: skip
        rows: list[dict[str, Any]] = []
        for hpa in sorted(hpas, key=lambda o: o["metadata"]["name"]):
            name = hpa["metadata"]["name"]
            metrics = [_hpa_metric(m) for m in (hpa.get("spec") or {}).get("metrics") or []]
            metric, _, target = metrics[0] if metrics else ("", math.nan, math.nan)
            ref = f"HorizontalPodAutoscaler/{name}"
            nan_inputs = {f"{metric}:{k}": math.nan for k in (
                "usage", "replicas", "ready_pods", "missing_pods", "unready_pods")}  # fmt: skip
            rescales = []
            for event in events:
                if (event.get("involvedObject") or {}).get("name") != name:
                    continue
                found = _RESCALE_MESSAGE.match(str(event.get("message", "")))
                if found is None:
                    continue
                for time_s in _event_times_s(event):
                    rescales.append((time_s, int(found[1]), found[2].strip(), event["message"]))
            previous = math.nan
            for time_s, size, reason, message in sorted(rescales):
                rows.append({
                    **nan_inputs, "time_s": time_s, "kind": "hpa", "object": ref, "hpa": name,
                    "source": "event SuccessfulRescale", "current_replicas": previous,
                    "metric_replicas": math.nan, "stabilized_replicas": math.nan,
                    "desired_replicas": size, "rescale": True, "reason": reason,
                    "limit_reason": "", "message": message, f"{metric}:target": target,
                })  # fmt: skip
                previous = float(size)
            status = hpa.get("status") or {}
            usage = math.nan
            for entry in status.get("currentMetrics") or []:
                observed_name, observed, _ = _hpa_metric(entry)
                if observed_name == metric:
                    usage = observed
            active = _hpa_condition(hpa, "ScalingActive")
            limited = _hpa_condition(hpa, "ScalingLimited")
            current = status.get("currentReplicas")
            desired = status.get("desiredReplicas")
            rows.append({
                **nan_inputs, "time_s": time.time(), "kind": "hpa", "object": ref, "hpa": name,
                "source": "status", "current_replicas": math.nan if current is None else current,
                "metric_replicas": math.nan, "stabilized_replicas": math.nan,
                "desired_replicas": math.nan if desired is None else desired,
                "rescale": current is not None and desired is not None and current != desired,
                "reason": f"{active.get('reason', '')}: {active.get('message', '')}".strip(": "),
                "limit_reason": limited.get("reason", "") if limited.get("status") == "True"
                else "",
                "message": f"lastScaleTime {status.get('lastScaleTime') or 'never'}",
                f"{metric}:usage": usage, f"{metric}:target": target,
            })  # fmt: skip
        frame = pd.DataFrame(rows)
        if frame.empty:
            return pd.DataFrame(columns=list(HPA_EVENT_COLUMNS))
        return frame.sort_values("time_s", kind="stable").reset_index(drop=True)

    def reset(
        self,
        *,
        yes: bool = False,
        namespaces: Iterable[str] | None = None,
        timeout_s: float = 300.0,
    ) -> pd.DataFrame:
        """Delete the lab's objects (label ``part-of=vllm-lws-lab``) in lab namespaces.

        Dry run unless ``yes``: the table says what would go. With ``yes`` it deletes (LWS with
        foreground propagation, so their pods go first) and waits until all are gone. Running it
        again finds nothing and changes nothing.

        Args:
            yes: really delete.
            namespaces: lab namespaces to reset (default: the backend's namespace).
            timeout_s: how long to wait for deletions to finish.
        """
        if self.read_only:
            warnings.warn(
                f"reset: the shared fleet in {self.namespace} is the instructor's; nothing of "
                "yours to delete there",
                stacklevel=2,
            )
            return pd.DataFrame(columns=["namespace", "kind", "name", "action"])
        chosen = list(namespaces) if namespaces is not None else [self.namespace]
        if self.scope == "namespace" and set(chosen) - {self.namespace}:
            raise ClusterError(
                f"reset of {sorted(set(chosen) - {self.namespace})}: this credential is pinned "
                f"to namespace {self.namespace}; an instructor context resets other namespaces"
            )
        kinds = [
            (api_version, kind)
            for api_version, kind in RESET_KINDS
            if self.scope == "cluster" or kind not in INSTRUCTOR_KINDS
        ]
        plan: list[tuple[Any, dict[str, Any]]] = []
        for namespace in chosen:
            if not self._is_lab_namespace(namespace):
                continue
            for api_version, kind in kinds:
                try:
                    resource = self.conn.resource(api_version, kind)
                except ClusterError:
                    continue  # CRD not installed: nothing of that kind can exist
                for obj in self._list(api_version, kind, namespace, LAB_SELECTOR):
                    obj.setdefault("kind", kind)
                    plan.append((resource, obj))
        rows = [
            {
                "namespace": obj["metadata"]["namespace"],
                "kind": obj["kind"],
                "name": obj["metadata"]["name"],
                "action": "delete" if yes else "would delete (dry run: pass yes=True / --yes)",
            }
            for _, obj in plan
        ]
        frame = pd.DataFrame(rows, columns=["namespace", "kind", "name", "action"])
        if not yes or not plan:
            return frame
        for resource, obj in plan:
            meta = obj["metadata"]
            try:
                with api_errors(
                    f"delete {obj['kind']} {meta['namespace']}/{meta['name']}", self.conn
                ):
                    resource.delete(
                        name=meta["name"],
                        namespace=meta["namespace"],
                        body={"propagationPolicy": "Foreground"},
                    )
            except ClusterError as exc:
                if ": not found:" not in str(exc):  # already gone is what we want
                    raise
        self._wait_gone(plan, timeout_s)
        frame["action"] = "deleted"
        return frame

    def _is_lab_namespace(self, namespace: str) -> bool:
        if self.scope == "namespace" and namespace == self.namespace:
            return True  # the participant's own namespace (no cluster-wide read to check it)
        ns = self._get_cluster("v1", "Namespace", namespace)
        if ns is None:
            return False  # nothing there: resetting it is a no-op
        labels = ns["metadata"].get("labels") or {}
        if namespace == self.namespace or labels.get(LAB_LABEL) == "vllm-lws-lab":
            return True
        raise ClusterError(
            f"namespace {namespace} is not a lab namespace (no label {LAB_SELECTOR}); reset only "
            f"touches lab namespaces: use --namespace {self.namespace} or --all-participants"
        )

    def _get_cluster(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        resource = self.conn.resource(api_version, kind)
        with api_errors(f"get {kind} {name}", self.conn):
            try:
                return dict(resource.get(name=name).to_dict())
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def lab_namespaces(self) -> list[str]:
        """Namespaces labelled as the lab's (the lab namespace and participants' ones)."""
        names = {n["metadata"]["name"] for n in self._list("v1", "Namespace", None, LAB_SELECTOR)}
        return sorted(names)

    def _wait_gone(self, plan: list[tuple[Any, dict[str, Any]]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        remaining = list(plan)
        with progress_bar(
            total=len(plan), desc="deleting lab objects", unit="obj", leave=False
        ) as bar:
            while remaining:
                still = []
                for resource, obj in remaining:
                    meta = obj["metadata"]
                    with api_errors(
                        f"get {obj['kind']} {meta['namespace']}/{meta['name']}", self.conn
                    ):
                        try:
                            resource.get(name=meta["name"], namespace=meta["namespace"])
                            still.append((resource, obj))
                        except ApiException as exc:
                            if exc.status != 404:
                                raise
                bar.update(len(remaining) - len(still))
                remaining = still
                if not remaining:
                    return
                if time.monotonic() >= deadline:
                    resource, obj = remaining[0]
                    raise WaitTimeout(
                        f"{_ref(obj)} still exists {timeout_s:g} s after delete "
                        f"({len(remaining)} objects left); check its finalizers "
                        f"(kubectl get {obj['kind'].lower()} -n {obj['metadata']['namespace']} "
                        f"{obj['metadata']['name']} -o yaml)"
                    )
                time.sleep(min(self.poll_s, 1.0))
