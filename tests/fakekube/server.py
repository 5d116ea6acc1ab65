"""A stateful fake Kubernetes API server, just enough for ``labutils.targets.eks``.

It runs aiohttp on 127.0.0.1 (a free port) in a background thread and writes a kubeconfig, so
the real ``kubernetes`` client (typed and dynamic) talks to it over HTTP as it would to EKS.

What it implements, as the real API server does:

- discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``) for
  the groups the lab uses; a CRD group left out of ``crds`` is absent from discovery and 404s;
- namespaces, core and custom objects: create, get, list (all namespaces or one), replace,
  merge patch, server-side apply (``application/apply-patch+yaml``: create-or-update,
  ``managedFields`` per manager, ``resourceVersion``, field conflicts with other managers give
  409 unless ``force=true``), delete with ``propagationPolicy`` (Foreground keeps the owner with
  a ``deletionTimestamp`` until its dependents are gone; Background lets a "garbage collector"
  remove dependents on the next tick; Orphan strips owner references);
- equality- and set-based label selectors (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``,
  ``a notin (x)``, ``a``, ``!a``) and simple field selectors;
- the LWS ``scale`` subresource (``autoscaling/v1`` ``Scale``);
- pod and service proxy (``.../pods/<name>[:<port>]/proxy/<path>``) forwarded to
  ``proxy_upstream`` (a local HTTP server standing in for the pod);
- Secrets: ``stringData`` is stored base64-encoded in ``data``, as the API server does;
- ``Status`` bodies with reason/code for 400/401/403/404/409/422;
- authentication by bearer token: the admin token (user ``kubernetes-admin`` in
  ``system:masters``) or a ServiceAccount token from the TokenRequest API
  (``POST .../serviceaccounts/<sa>/token``), valid while that ServiceAccount (same UID)
  exists and until it expires, as bound tokens are; anything else is 401;
- RBAC authorization of every request (:mod:`fakekube.rbac`: Role/RoleBinding/ClusterRole/
  ClusterRoleBinding rules with verbs, apiGroups, resources, subresources, resourceNames,
  namespaces, non-resource URLs; the bootstrap ``system:discovery``/``system:basic-user``
  bindings); a denial is a 403 with the API server's message, recorded in ``denials``, and
  every request's attributes are recorded in ``audit``. Server-side apply that creates an
  object also needs ``create`` (the API server's patch handler checks it);
- a minimal LeaderWorkerSet controller: leader ``<lws>-<g>`` and workers ``<lws>-<g>-<w>`` with
  the LWS labels, ``size`` annotation and env (``LWS_LEADER_ADDRESS``, ``LWS_GROUP_SIZE``,
  ``LWS_WORKER_INDEX``), scheduled onto a fake GPU node of the LWS's zone and marked Ready
  after ``ready_delay_s``; status ``replicas``/``readyReplicas``/``hpaPodSelector`` and the
  ``Available`` condition; a ``FailedScheduling`` warning event when no GPU node is in the zone.

Where it differs from a real API server (on purpose, to stay small):

- no TLS; ``forbid`` additionally refuses (verb, resource) pairs with 403 whoever asks (to
  simulate a denial without writing RBAC); no RBAC escalation checks, no aggregated
  ClusterRoles; no admission webhooks, no defaulting beyond ``metadata``, no schema
  validation except names (DNS-1123 → 422) and negative replicas on ``scale`` (422);
- server-side apply tracks ownership of leaf fields only, treats lists as atomic values (real
  SSA merges ``listType=map`` lists by key) and never removes fields a manager stops applying;
- no watch, no pagination (``limit``/``continue`` ignored), no ``deletecollection``;
- field selectors compare any dotted path (the real server allows a few fields per kind);
- namespace deletion (after ``terminate_delay_s``) and garbage collection complete on a
  controller tick (every 50 ms) instead of after finalizers and the real GC run;
- pods have no kubelet: "ready" is set by the fake LWS controller, a deleted pod goes at once
  (no grace period), and the proxy forwards every pod to the one ``proxy_upstream`` without
  the client's headers (the real API server drops ``Authorization`` after authenticating);
- discovery lists every verb for every resource and no short names or categories.
- Events are ``v1`` core events written by the fake LWS controller, or planted by a test with
  :meth:`FakeKube.record_event` (e.g. the HPA controller's ``SuccessfulRescale``); there is no
  HPA controller: an HPA's ``status`` is whatever the test stores with :meth:`FakeKube.put`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from fakekube import rbac

__all__ = ["ADMIN", "FakeKube"]

TOKEN = "fake-token-for-tests"  # not a secret: the fake's admin credential
ADMIN = rbac.User("kubernetes-admin", (rbac.MASTERS, rbac.AUTHENTICATED))
PART_OF = "app.kubernetes.io/part-of"
ZONE_LABEL = "topology.kubernetes.io/zone"
LWS_PREFIX = "leaderworkerset.sigs.k8s.io/"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class _Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    crd: bool = False
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_KINDS = (
    _Kind("", "v1", "namespaces", "Namespace", False, subresources=("status",)),
    _Kind("", "v1", "nodes", "Node", False),
    _Kind("", "v1", "pods", "Pod", True, subresources=("proxy", "status")),
    _Kind("", "v1", "services", "Service", True, subresources=("proxy", "status")),
    _Kind("", "v1", "events", "Event", True),
    _Kind("", "v1", "configmaps", "ConfigMap", True),
    _Kind("", "v1", "secrets", "Secret", True),
    _Kind("", "v1", "serviceaccounts", "ServiceAccount", True, subresources=("token",)),
    _Kind("", "v1", "resourcequotas", "ResourceQuota", True, subresources=("status",)),
    _Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    _Kind("apps", "v1", "deployments", "Deployment", True, subresources=("scale", "status")),
    _Kind("apps", "v1", "daemonsets", "DaemonSet", True, subresources=("status",)),
    _Kind("batch", "v1", "jobs", "Job", True, subresources=("status",)),
    _Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
    _Kind("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    _Kind("storage.k8s.io", "v1", "storageclasses", "StorageClass", False),
    _Kind(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
    ),
    _Kind(
        "leaderworkerset.x-k8s.io",
        "v1",
        "leaderworkersets",
        "LeaderWorkerSet",
        True,
        True,
        ("scale", "status"),
    ),
    _Kind(
        "gateway.networking.k8s.io",
        "v1",
        "gatewayclasses",
        "GatewayClass",
        False,
        True,
        ("status",),
    ),
    _Kind("gateway.networking.k8s.io", "v1", "gateways", "Gateway", True, True, ("status",)),
    _Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True, True, ("status",)),
    _Kind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", True, True, ("status",)),
    _Kind("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor", True, True),
    _Kind(
        "gateway.envoyproxy.io",
        "v1alpha1",
        "backendtrafficpolicies",
        "BackendTrafficPolicy",
        True,
        True,
        ("status",),
    ),
    _Kind("gateway.envoyproxy.io", "v1alpha1", "envoyproxies", "EnvoyProxy", True, True),
    _Kind("karpenter.sh", "v1", "nodepools", "NodePool", False, True, ("status",)),
    _Kind("karpenter.k8s.aws", "v1", "ec2nodeclasses", "EC2NodeClass", False, True, ("status",)),
)
CRD_GROUPS = tuple(sorted({k.group for k in _KINDS if k.crd}))


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def response(self) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }
        return web.json_response(body, status=self.code)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- label selectors
_SEL_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a Kubernetes label selector string (raises ValueError)."""
    for req in _split_selector(selector):
        if m := _SEL_SET.match(req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif re.fullmatch(r"[A-Za-z0-9._/-]+", req):
            if req not in labels:
                return False
        else:
            raise ValueError(f"unable to parse requirement: {req!r}")
    return True


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _field_matches(selector: str, obj: dict[str, Any]) -> bool:
    for req in _split_selector(selector):
        negate = "!=" in req
        key, value = (s.strip() for s in req.replace("==", "=").replace("!=", "=").split("=", 1))
        found = _dig(obj, key)
        equal = ("" if found is None else str(found)) == value
        if equal == negate:
            return False
    return True


# ---------------------------------------------------------------- server-side apply helpers
def _leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(obj, dict) and obj:
        out: set[tuple[str, ...]] = set()
        for key, value in obj.items():
            out |= _leaf_paths(value, (*prefix, key))
        return out
    return {prefix}


def _owned_paths(obj: dict[str, Any]) -> set[tuple[str, ...]]:
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in body.get("metadata", {}).items() if k in ("labels", "annotations")}
    body.pop("metadata", None)
    if meta:
        body["metadata"] = meta
    return _leaf_paths(body) - {()}


def _to_fields_v1(paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def _from_fields_v1(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not tree:
        return {prefix}
    out: set[tuple[str, ...]] = set()
    for key, sub in tree.items():
        out |= _from_fields_v1(sub, (*prefix, key.removeprefix("f:")))
    return out


def _get_path(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _deep_merge(live: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge: dicts merge, ``None`` deletes, anything else (lists too) replaces."""
    out = copy.deepcopy(live)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- the server
class FakeKube:
    """The fake API server; use as a context manager (``with FakeKube(tmp_path) as kube:``).

    Args:
        workdir: where the kubeconfig is written.
        zones: zones that get one fake GPU node each (``nvidia.com/gpu`` allocatable 8).
        crds: CRD groups installed (default: all of :data:`CRD_GROUPS`).
        ready_delay_s: how long after creation a scheduled pod turns Ready.
        terminate_delay_s: how long a deleted namespace stays ``Terminating``.
        aws_lb_controller: whether the AWS Load Balancer Controller Deployment exists.
        proxy_upstream: base URL that pod/service proxy requests are forwarded to.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        zones: Iterable[str] = ("us-west-2a", "us-west-2b"),
        crds: Iterable[str] | None = None,
        ready_delay_s: float = 0.1,
        aws_lb_controller: bool = True,
        proxy_upstream: str | None = None,
        terminate_delay_s: float = 0.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.crds = set(CRD_GROUPS if crds is None else crds)
        self.ready_delay_s = ready_delay_s
        self.proxy_upstream = proxy_upstream
        self.terminate_delay_s = terminate_delay_s
        self._terminating_since: dict[str, float] = {}  # namespace uid -> delete time
        self.forbid: set[tuple[str, str]] = set()  # (verb, plural) answered with 403
        self.requests: list[tuple[str, str]] = []  # (method, path) as received
        self.denials: list[str] = []  # 403 messages RBAC (or forbid) answered
        self.audit: list[rbac.Attributes] = []  # every authenticated request's attributes
        # token -> (namespace, ServiceAccount name, its UID, expiry epoch seconds)
        self._sa_tokens: dict[str, tuple[str, str, str, float]] = {}
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._pod_state: dict[str, dict[str, Any]] = {}  # uid -> scheduling bookkeeping
        self._rv = 100
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        for ns in ("default", "kube-system"):
            self.put("", "namespaces", "", {"metadata": {"name": ns}})
        for plural, obj in rbac.BOOTSTRAP:
            self.put("rbac.authorization.k8s.io", plural, "", obj)
        for zone in zones:
            self.add_gpu_node(zone)
        if aws_lb_controller:
            self.put(
                "apps",
                "deployments",
                "kube-system",
                {
                    "metadata": {
                        "name": "aws-load-balancer-controller",
                        "labels": {"app.kubernetes.io/name": "aws-load-balancer-controller"},
                    },
                    "spec": {"replicas": 2},
                    "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2},
                },
            )

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeKube:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake API server did not start within 10 s")

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(10)
        self._thread = None

    def _serve(self, started: threading.Event) -> None:
        asyncio.run(self._main(started))

    async def _main(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        tick = asyncio.create_task(self._controller_loop())
        started.set()
        await self._stop.wait()
        tick.cancel()
        await self._runner.cleanup()

    def write_kubeconfig(
        self,
        path: Path | None = None,
        *,
        context: str = "fake",
        token: str = TOKEN,
        namespace: str | None = None,
    ) -> Path:
        """Write a kubeconfig for this server (context ``context``, the admin token unless
        ``token`` is given, pinned to ``namespace`` if given) and return its path."""
        path = path or self.workdir / "kubeconfig"
        ctx: dict[str, str] = {"cluster": "fake", "user": "fake-user"}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": token}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ------------------------------------------------------------ store helpers (thread-safe)
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def put(self, group: str, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` directly (test setup), filling in metadata as the server would."""
        kind = self._kind_by_plural(group, plural)
        with self._lock:
            obj = copy.deepcopy(obj)
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            meta = obj.setdefault("metadata", {})
            if kind.namespaced:
                meta["namespace"] = namespace
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = self._next_rv()
            meta.setdefault("generation", 1)
            self.objects[(group, plural, namespace if kind.namespaced else "", meta["name"])] = obj
            return obj

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        with self._lock:
            found = self.objects.get((group, plural, namespace, name))
            return copy.deepcopy(found) if found else None

    def names(self, group: str, plural: str, namespace: str | None = None) -> set[str]:
        """Names of stored objects of one resource (in ``namespace`` if given)."""
        with self._lock:
            return {
                key[3]
                for key in self.objects
                if key[0] == group and key[1] == plural and namespace in (None, key[2])
            }

    def record_event(
        self,
        namespace: str,
        involved: dict[str, Any],
        reason: str,
        message: str,
        *,
        first_timestamp: str | None = None,
        last_timestamp: str | None = None,
        count: int = 1,
        component: str = "test",
        etype: str = "Normal",
    ) -> dict[str, Any]:
        """Store a core/v1 Event about a stored object, as a controller's event recorder would
        (``count`` with first/last timestamps for an aggregated repeat)."""
        meta = involved["metadata"]
        first = first_timestamp or _now()
        return self.put("", "events", namespace, {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": {
                "kind": involved.get("kind", ""), "name": meta["name"], "namespace": namespace,
                "uid": meta.get("uid", ""), "apiVersion": involved.get("apiVersion", "v1"),
            },
            "reason": reason, "message": message, "type": etype, "count": count,
            "firstTimestamp": first, "lastTimestamp": last_timestamp or first,
            "source": {"component": component},
        })  # fmt: skip

    def add_gpu_node(self, zone: str, gpus: int = 8) -> None:
        """Add a node in ``zone`` with ``nvidia.com/gpu`` allocatable."""
        index = len(self.names("", "nodes"))
        self.put(
            "",
            "nodes",
            "",
            {
                "metadata": {
                    "name": f"ip-10-0-{index}-1.us-west-2.compute.internal",
                    "labels": {ZONE_LABEL: zone, "node.kubernetes.io/instance-type": "g5.12xlarge"},
                },
                "status": {
                    "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "48"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
        )

    def _kind_by_plural(self, group: str, plural: str) -> _Kind:
        for kind in _KINDS:
            if kind.group == group and kind.plural == plural:
                return kind
        raise KeyError((group, plural))

    def _served(self, group: str, version: str) -> list[_Kind]:
        return [
            k
            for k in _KINDS
            if k.group == group and k.version == version and (not k.crd or k.group in self.crds)
        ]

    # ------------------------------------------------------------ HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            user = self._authenticate(request.headers.get("Authorization", ""))
            return await self._dispatch(request, user)
        except _ApiError as exc:
            return exc.response()

    def _authenticate(self, header: str) -> rbac.User:
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        if token == TOKEN:
            return ADMIN
        with self._lock:
            bound = self._sa_tokens.get(token)
            if bound is not None:
                namespace, name, uid, expiry_s = bound
                account = self.objects.get(("", "serviceaccounts", namespace, name))
                live = account is not None and account["metadata"].get("uid") == uid
                if live and time.time() < expiry_s:
                    return rbac.service_account_user(namespace, name)
        raise _ApiError(401, "Unauthorized", "Unauthorized")

    def authorize(self, attrs: rbac.Attributes) -> bool:
        """Whether RBAC allows ``attrs`` with the roles and bindings stored now."""
        with self._lock:
            group = "rbac.authorization.k8s.io"
            return rbac.allowed(
                attrs,
                cluster_roles={k[3]: o for k, o in self.objects.items()
                               if k[:2] == (group, "clusterroles")},
                cluster_role_bindings=[o for k, o in self.objects.items()
                                       if k[:2] == (group, "clusterrolebindings")],
                roles={(k[2], k[3]): o for k, o in self.objects.items()
                       if k[:2] == (group, "roles")},
                role_bindings=[o for k, o in self.objects.items()
                               if k[:2] == (group, "rolebindings")],
            )  # fmt: skip

    def _check(self, attrs: rbac.Attributes) -> None:
        self.audit.append(attrs)
        forbidden = (attrs.verb, attrs.combined_resource) in self.forbid
        if forbidden or not self.authorize(attrs):
            message = rbac.forbidden_message(attrs)
            self.denials.append(message)
            raise _ApiError(
                403,
                "Forbidden",
                message,
                {"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource},
            )

    async def _dispatch(self, request: web.Request, user: rbac.User) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) <= 3 or parts[:1] == ["version"]:
            # /version, /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>: discovery (non-resource)
            is_resource = (parts[:1] == ["api"] and len(parts) == 3) or (
                parts[:1] == ["apis"] and len(parts) > 3
            )
            if not is_resource:
                self._check(rbac.Attributes(user, "get", request.path, resource_request=False))
        if parts == ["version"]:
            return web.json_response(
                {
                    "major": "1",
                    "minor": "33",
                    "emulationMajor": "1",
                    "emulationMinor": "33",
                    "minCompatibilityMajor": "1",
                    "minCompatibilityMinor": "32",
                    "gitVersion": "v1.33.0-fake",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.24.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            return web.json_response(self._api_groups())
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        kinds = self._served(group, version)
        if not kinds:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return web.json_response(self._resource_list(group, version, kinds))
        by_plural = {k.plural: k for k in kinds}
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in by_plural:
            namespace, rest = rest[1], rest[2:]
        kind = by_plural.get(rest[0])
        if kind is None:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        verb = {
            "GET": "get" if name else ("watch" if request.query.get("watch") else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(request.method, "")
        attrs = rbac.Attributes(
            user, verb, request.path, api_group=group, resource=kind.plural, subresource=sub,
            namespace=namespace, name=name,
        )  # fmt: skip
        self._check(attrs)
        if sub == "proxy":
            return await self._proxy(request, kind, namespace, name, "/".join(rest[3:]))
        if sub == "token" and kind.plural == "serviceaccounts" and request.method == "POST":
            return web.json_response(
                self._token_request(namespace, name, await request.read()), status=201
            )
        return self._crud(request, kind, namespace, name, sub, await request.read(), attrs)

    def _api_groups(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for k in _KINDS:
            if k.group and (not k.crd or k.group in self.crds):
                groups.setdefault(k.group, [])
                if k.version not in groups[k.group]:
                    groups[k.group].append(k.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }

    def _resource_list(self, group: str, version: str, kinds: list[_Kind]) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for k in kinds:
            resources.append(
                {
                    "name": k.plural,
                    "singularName": k.kind.lower(),
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update"],
                }
            )
            for sub in k.subresources:
                sub_kind = {"scale": "Scale", "proxy": f"{k.kind}ProxyOptions"}.get(sub, k.kind)
                entry = {
                    "name": f"{k.plural}/{sub}",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": sub_kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    entry.update(group="autoscaling", version="v1")
                resources.append(entry)
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    def _token_request(self, namespace: str, name: str, raw: bytes) -> dict[str, Any]:
        """TokenRequest: a token bound to the ServiceAccount's UID, expiring as asked."""
        body = self._body(raw, "application/json") if raw else {}
        expiry = int((body.get("spec") or {}).get("expirationSeconds") or 3600)
        with self._lock:
            account = self._must_get(self._kind_by_plural("", "serviceaccounts"), namespace, name)
            token = f"sa-{uuid.uuid4().hex}"
            expires_s = time.time() + expiry
            self._sa_tokens[token] = (namespace, name, account["metadata"]["uid"], expires_s)
        stamp = datetime.fromtimestamp(expires_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**(body.get("spec") or {}), "expirationSeconds": expiry},
            "status": {"token": token, "expirationTimestamp": stamp},
        }

    # ------------------------------------------------------------ CRUD
    def _crud(
        self,
        request: web.Request,
        kind: _Kind,
        namespace: str,
        name: str,
        sub: str,
        raw: bytes,
        attrs: rbac.Attributes,
    ) -> web.Response:
        method = request.method
        query = request.query
        manager = (
            query.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        )
        with self._lock:
            if method == "GET" and not name:
                return web.json_response(self._list(kind, namespace, query))
            if method == "GET" and not sub:
                return web.json_response(self._must_get(kind, namespace, name))
            if sub == "scale":
                return web.json_response(self._scale(request, kind, namespace, name, raw, manager))
            if sub == "status" and method == "GET":
                return web.json_response(self._must_get(kind, namespace, name))
            if method == "POST" and not name:
                body = self._body(raw, "application/json")
                return web.json_response(self._create(kind, namespace, body, manager), status=201)
            if method == "PATCH" and name and not sub:
                ctype = request.content_type
                if ctype == "application/apply-patch+yaml":
                    if "fieldManager" not in query:
                        raise _ApiError(
                            400,
                            "BadRequest",
                            "PATCH requests must specify a fieldManager for apply",
                        )
                    body = self._body(raw, ctype)
                    if self._key(kind, namespace, name) not in self.objects:
                        # an apply that creates needs "create" too (apiserver patch handler)
                        self._check(dataclasses.replace(attrs, verb="create"))
                    force = query.get("force") in ("true", "True", "1")
                    obj, created = self._apply(kind, namespace, name, body, manager, force)
                    return web.json_response(obj, status=201 if created else 200)
                if ctype in (
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                ):
                    patch = self._body(raw, ctype)
                    return web.json_response(self._update(kind, namespace, name, patch, manager))
                raise _ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format: {ctype}",
                )
            if method == "PUT" and name and not sub:
                body = self._body(raw, "application/json")
                live = self._must_get(kind, namespace, name)
                rv = body.get("metadata", {}).get("resourceVersion")
                if rv and rv != live["metadata"]["resourceVersion"]:
                    raise self._modified(kind, name)
                return web.json_response(
                    self._update(kind, namespace, name, body, manager, replace=True)
                )
            if method == "DELETE" and name and not sub:
                options = self._body(raw, "application/json") if raw else {}
                policy = query.get("propagationPolicy") or options.get("propagationPolicy")
                return web.json_response(self._delete(kind, namespace, name, policy))
        raise _ApiError(405, "MethodNotAllowed", f"{method} is not supported on this path")

    def _body(self, raw: bytes, ctype: str) -> dict[str, Any]:
        try:
            body = yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw or b"{}")
        except (yaml.YAMLError, ValueError) as exc:
            raise _ApiError(400, "BadRequest", f"error decoding request body: {exc}") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "BadRequest", "request body must be an object")
        return body

    def _key(self, kind: _Kind, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (kind.group, kind.plural, namespace if kind.namespaced else "", name)

    def _not_found(self, kind: _Kind, name: str) -> _ApiError:
        resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
        return _ApiError(
            404,
            "NotFound",
            f'{resource} "{name}" not found',
            {"name": name, "group": kind.group, "kind": kind.plural},
        )

    def _modified(self, kind: _Kind, name: str) -> _ApiError:
        return _ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {kind.plural} "{name}": the object '
            "has been modified; please apply your changes to the latest version "
            "and try again",
            {"name": name, "kind": kind.plural},
        )

    def _must_get(self, kind: _Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise self._not_found(kind, name)
        return copy.deepcopy(obj)

    def _list(self, kind: _Kind, namespace: str, query: Any) -> dict[str, Any]:
        items = []
        for key, obj in sorted(self.objects.items()):
            if key[0] != kind.group or key[1] != kind.plural:
                continue
            if namespace and key[2] != namespace:
                continue
            try:
                if "labelSelector" in query and not selector_matches(
                    query["labelSelector"], obj["metadata"].get("labels") or {}
                ):
                    continue
            except ValueError as exc:
                raise _ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from None
            if "fieldSelector" in query and not _field_matches(query["fieldSelector"], obj):
                continue
            item = copy.deepcopy(obj)
            if not kind.crd:  # built-in lists carry kind/apiVersion on the list only
                item.pop("kind", None)
                item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _check_new(self, kind: _Kind, namespace: str, name: str) -> None:
        if not name or not _DNS1123.match(name) or len(name) > 253:
            raise _ApiError(
                422,
                "Invalid",
                f'{kind.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                "lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'",
                {
                    "name": name,
                    "kind": kind.kind,
                    "causes": [{"reason": "FieldValueInvalid", "field": "metadata.name"}],
                },
            )
        if kind.namespaced:
            ns = self.objects.get(("", "namespaces", "", namespace))
            if ns is None:
                raise _ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            if ns["metadata"].get("deletionTimestamp"):
                raise _ApiError(
                    403,
                    "Forbidden",
                    f'{kind.plural} "{name}" is forbidden: unable to create new '
                    f"content in namespace {namespace} because it is being "
                    "terminated",
                )

    def _stamp(self, kind: _Kind, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["resourceVersion"] = self._next_rv()
        if kind.kind == "Namespace":
            obj.setdefault("status", {})["phase"] = "Active"
        if kind.kind == "Secret" and obj.get("stringData"):
            # write-only convenience field: the server stores it base64-encoded in data
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        return obj

    def _create(
        self, kind: _Kind, namespace: str, body: dict[str, Any], manager: str
    ) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name", "")
        self._check_new(kind, namespace, name)
        if self._key(kind, namespace, name) in self.objects:
            raise _ApiError(
                409,
                "AlreadyExists",
                f'{kind.plural} "{name}" already exists',
                {"name": name, "kind": kind.plural},
            )
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta["managedFields"] = [self._entry(manager, "Update", kind, _owned_paths(body))]
        self._stamp(kind, namespace, obj)
        self.objects[self._key(kind, namespace, name)] = obj
        return copy.deepcopy(obj)

    def _entry(
        self,
        manager: str,
        operation: str,
        kind: _Kind,
        paths: set[tuple[str, ...]],
        subresource: str = "",
    ) -> dict[str, Any]:
        entry = {
            "manager": manager,
            "operation": operation,
            "apiVersion": kind.api_version,
            "time": _now(),
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields_v1(paths),
        }
        if subresource:
            entry["subresource"] = subresource
        return entry

    def _apply(
        self,
        kind: _Kind,
        namespace: str,
        name: str,
        body: dict[str, Any],
        manager: str,
        force: bool,
    ) -> tuple[dict[str, Any], bool]:
        if body.get("apiVersion") != kind.api_version or body.get("kind") != kind.kind:
            raise _ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) and kind "
                f"({body.get('kind')}) do not match the URL ({kind.api_version}, "
                f"{kind.kind})",
            )
        body_name = body.get("metadata", {}).get("name")
        if body_name != name:
            raise _ApiError(
                400,
                "BadRequest",
                f"the name of the object ({body_name}) does not match the name on the URL ({name})",
            )
        if "status" in kind.subresources:
            body = {k: v for k, v in body.items() if k != "status"}
        paths = _owned_paths(body)
        key = self._key(kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            self._check_new(kind, namespace, name)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            meta["managedFields"] = [self._entry(manager, "Apply", kind, paths)]
            self.objects[key] = self._stamp(kind, namespace, obj)
            return copy.deepcopy(obj), True
        rv = body.get("metadata", {}).get("resourceVersion")
        if rv and rv != live["metadata"]["resourceVersion"]:
            raise self._modified(kind, name)
        entries = live["metadata"].get("managedFields", [])
        conflicts: list[tuple[str, str]] = []
        for entry in entries:
            if entry["manager"] == manager and entry["operation"] == "Apply":
                continue
            for path in _from_fields_v1(entry.get("fieldsV1", {})) & paths:
                if _get_path(live, path) != _get_path(body, path):
                    conflicts.append((entry["manager"], "." + ".".join(path)))
        if conflicts and not force:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "field": field,
                    "message": f'conflict with "{m}"',
                }
                for m, field in conflicts
            ]
            text = "; ".join(f'conflict with "{m}": {field}' for m, field in conflicts)
            raise _ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s): {text}",
                {"name": name, "kind": kind.plural, "causes": causes},
            )
        taken = {path for _, path_s in conflicts for path in [tuple(path_s[1:].split("."))]}
        new_entries = []
        for entry in entries:
            if entry["manager"] == manager and entry["operation"] == "Apply":
                continue
            kept = _from_fields_v1(entry.get("fieldsV1", {})) - taken
            if kept:
                new_entries.append({**entry, "fieldsV1": _to_fields_v1(kept)})
        new_entries.append(self._entry(manager, "Apply", kind, paths))
        merged = _deep_merge(live, {k: v for k, v in body.items() if k != "metadata"})
        merged["metadata"] = _deep_merge(
            live["metadata"],
            {k: v for k, v in body.get("metadata", {}).items() if k in ("labels", "annotations")},
        )
        if merged.get("spec") != live.get("spec"):
            merged["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        merged["metadata"]["managedFields"] = new_entries
        self.objects[key] = self._stamp(kind, namespace, merged)
        return copy.deepcopy(merged), False

    def _update(
        self,
        kind: _Kind,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        manager: str,
        *,
        replace: bool = False,
        subresource: str = "",
    ) -> dict[str, Any]:
        live = self._must_get(kind, namespace, name)
        if replace:
            merged = copy.deepcopy(patch)
            merged["metadata"] = {
                **patch.get("metadata", {}),
                **{
                    k: live["metadata"][k]
                    for k in ("uid", "creationTimestamp", "generation", "managedFields")
                    if k in live["metadata"]
                },
            }
        else:
            merged = _deep_merge(live, patch)
        changed = {p for p in _owned_paths(merged) if _get_path(merged, p) != _get_path(live, p)}
        entries = []
        for entry in live["metadata"].get("managedFields", []):
            kept = _from_fields_v1(entry.get("fieldsV1", {})) - changed
            if entry["manager"] == manager and entry["operation"] == "Update":
                changed |= kept
                continue
            if kept:
                entries.append({**entry, "fieldsV1": _to_fields_v1(kept)})
        if changed:
            entries.append(self._entry(manager, "Update", kind, changed, subresource))
        merged["metadata"]["managedFields"] = entries
        if merged.get("spec") != live.get("spec"):
            merged["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        self.objects[self._key(kind, namespace, name)] = self._stamp(kind, namespace, merged)
        return copy.deepcopy(merged)

    def _scale(
        self, request: web.Request, kind: _Kind, namespace: str, name: str, raw: bytes, manager: str
    ) -> dict[str, Any]:
        if "scale" not in kind.subresources:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        if request.method in ("PATCH", "PUT"):
            body = self._body(raw, request.content_type)
            replicas = body.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise _ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid '
                    f"value: {replicas!r}: must be greater than or equal to 0",
                    {
                        "name": name,
                        "kind": "Scale",
                        "causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas"}],
                    },
                )
            self._update(
                kind,
                namespace,
                name,
                {"spec": {"replicas": replicas}},
                manager,
                subresource="scale",
            )
        obj = self._must_get(kind, namespace, name)
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": obj.get("status", {}).get("hpaPodSelector", ""),
            },
        }

    def _delete(self, kind: _Kind, namespace: str, name: str, policy: str | None) -> dict[str, Any]:
        key = self._key(kind, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            raise self._not_found(kind, name)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return copy.deepcopy(obj)
        uid = meta["uid"]
        if kind.kind == "Namespace":
            self._terminating_since[uid] = time.time()
            meta["deletionTimestamp"] = _now()
            obj["status"]["phase"] = "Terminating"
            meta["resourceVersion"] = self._next_rv()
            return copy.deepcopy(obj)
        if policy == "Orphan":
            for dep in self._dependents(uid):
                dep["metadata"]["ownerReferences"] = [
                    r for r in dep["metadata"]["ownerReferences"] if r["uid"] != uid
                ]
        if policy == "Foreground" and self._dependents(uid):
            meta["deletionTimestamp"] = _now()
            meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
            meta["resourceVersion"] = self._next_rv()
            return copy.deepcopy(obj)
        del self.objects[key]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": uid},
        }

    def _dependents(self, uid: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects.values()
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))
        ]

    # ------------------------------------------------------------ proxy
    async def _proxy(
        self, request: web.Request, kind: _Kind, namespace: str, name: str, path: str
    ) -> web.Response:
        obj_name = name.split(":", 1)[0]
        with self._lock:
            obj = self._must_get(kind, namespace, obj_name)
        if kind.kind == "Pod" and obj.get("status", {}).get("phase") != "Running":
            raise _ApiError(
                503,
                "ServiceUnavailable",
                f'pod "{obj_name}" is not running (phase {obj.get("status", {}).get("phase")})',
            )
        if not self.proxy_upstream:
            raise _ApiError(
                503,
                "ServiceUnavailable",
                f"error trying to reach {kind.kind.lower()}: dial tcp: connect: connection refused",
            )
        url = f"{self.proxy_upstream.rstrip('/')}/{path}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                url,
                data=await request.read(),
                params=request.query,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as upstream,
        ):
            body = await upstream.read()
            return web.Response(
                body=body, status=upstream.status, content_type=upstream.content_type
            )

    # ------------------------------------------------------------ controllers
    async def _controller_loop(self) -> None:
        while True:
            with self._lock:
                self._reconcile()
            await asyncio.sleep(0.05)

    def _reconcile(self) -> None:
        self._collect_garbage()
        for key, lws in list(self.objects.items()):
            if key[1] == "leaderworkersets" and not lws["metadata"].get("deletionTimestamp"):
                self._reconcile_lws(key[2], lws)
        for key, svc in list(self.objects.items()):
            if key[1] == "services" and svc.get("spec", {}).get("type") == "LoadBalancer":
                if (
                    self.objects.get(
                        ("apps", "deployments", "kube-system", "aws-load-balancer-controller")
                    )
                    is None
                ):
                    continue
                ingress = svc.setdefault("status", {}).setdefault("loadBalancer", {})
                if not ingress.get("ingress"):
                    host = f"k8s-{key[2][:8]}-{key[3][:8]}-0123456789.elb.us-west-2.amazonaws.com"
                    ingress["ingress"] = [{"hostname": host}]
                    svc["metadata"]["resourceVersion"] = self._next_rv()

    def _collect_garbage(self) -> None:
        uids = {o["metadata"]["uid"] for o in self.objects.values()}
        for key, obj in list(self.objects.items()):
            meta = obj["metadata"]
            if key[1] == "namespaces" and meta.get("deletionTimestamp"):
                since = self._terminating_since.setdefault(meta["uid"], time.time())
                if time.time() - since < self.terminate_delay_s:
                    continue
                for other in [k for k in self.objects if k[2] == key[3] and k[1] != "namespaces"]:
                    del self.objects[other]
                del self.objects[key]
                continue
            refs = meta.get("ownerReferences", [])
            if refs and not any(r["uid"] in uids for r in refs):
                self.objects.pop(key, None)
            if "foregroundDeletion" in meta.get("finalizers", []):
                for dep_key, dep in list(self.objects.items()):
                    if any(
                        r.get("uid") == meta["uid"]
                        for r in dep["metadata"].get("ownerReferences", [])
                    ):
                        del self.objects[dep_key]
                self.objects.pop(key, None)

    def _event(
        self,
        namespace: str,
        involved: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
        etype: str = "Normal",
    ) -> None:
        name = f"{involved['metadata']['name']}.{uuid.uuid4().hex[:12]}"
        self.put(
            "",
            "events",
            namespace,
            {
                "metadata": {"name": name},
                "involvedObject": {
                    "kind": kind,
                    "name": involved["metadata"]["name"],
                    "namespace": namespace,
                    "uid": involved["metadata"]["uid"],
                    "apiVersion": involved.get("apiVersion", "v1"),
                },
                "reason": reason,
                "message": message,
                "type": etype,
                "count": 1,
                "firstTimestamp": _now(),
                "lastTimestamp": _now(),
                "source": {"component": "fake-lws-controller"},
            },
        )

    def _node_for(self, zone: str | None) -> str | None:
        for key, node in sorted(self.objects.items()):
            if key[1] != "nodes":
                continue
            if int(node["status"]["allocatable"].get("nvidia.com/gpu", "0")) <= 0:
                continue
            if zone is None or node["metadata"]["labels"].get(ZONE_LABEL) == zone:
                return key[3]
        return None

    def _reconcile_lws(self, namespace: str, lws: dict[str, Any]) -> None:
        name = lws["metadata"]["name"]
        spec = lws.get("spec", {})
        replicas = int(spec.get("replicas", 1))
        template = spec.get("leaderWorkerTemplate", {})
        size = int(template.get("size", 1))
        worker_tpl = template.get("workerTemplate", {})
        leader_tpl = template.get("leaderTemplate") or worker_tpl
        zone = worker_tpl.get("spec", {}).get("nodeSelector", {}).get(ZONE_LABEL) or lws[
            "metadata"
        ].get("labels", {}).get("vllm-lws-lab.io/zone")
        owner = {
            "apiVersion": lws["apiVersion"],
            "kind": "LeaderWorkerSet",
            "name": name,
            "uid": lws["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        if ("", "services", namespace, name) not in self.objects:
            self.put(
                "",
                "services",
                namespace,
                {
                    "metadata": {
                        "name": name,
                        "ownerReferences": [owner],
                        "labels": {LWS_PREFIX + "name": name},
                    },
                    "spec": {"clusterIP": "None", "selector": {LWS_PREFIX + "name": name}},
                },
            )
        now = time.time()
        ready_groups = 0
        for g in range(replicas):
            group_ready = True
            for w in range(size):
                pod_name = f"{name}-{g}" if w == 0 else f"{name}-{g}-{w}"
                key = ("", "pods", namespace, pod_name)
                pod = self.objects.get(key)
                if pod is None:
                    pod = self._create_pod(
                        namespace,
                        lws,
                        owner,
                        leader_tpl if w == 0 else worker_tpl,
                        pod_name,
                        g,
                        w,
                        size,
                        zone,
                    )
                    self._event(
                        namespace,
                        lws,
                        "LeaderWorkerSet",
                        "SuccessfulCreate",
                        f"Created pod {pod_name}",
                    )
                group_ready &= self._progress_pod(namespace, pod, zone, now)
            ready_groups += group_ready
        for key in [
            k
            for k, p in self.objects.items()
            if k[1] == "pods"
            and k[2] == namespace
            and p["metadata"].get("labels", {}).get(LWS_PREFIX + "name") == name
            and int(p["metadata"]["labels"].get(LWS_PREFIX + "group-index", 0)) >= replicas
        ]:
            del self.objects[key]
        available = ready_groups == replicas
        status = {
            "replicas": replicas,
            "readyReplicas": ready_groups,
            "updatedReplicas": replicas,
            "hpaPodSelector": f"{LWS_PREFIX}name={name},{LWS_PREFIX}worker-index=0",
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "AllGroupsReady" if available else "GroupsNotReady",
                    "message": f"{ready_groups}/{replicas} groups ready",
                },
                {
                    "type": "Progressing",
                    "status": "False" if available else "True",
                    "reason": "GroupsProgressing",
                    "message": "Replicas are progressing",
                },
            ],
        }
        if lws.get("status") != status:
            lws["status"] = status
            lws["metadata"]["resourceVersion"] = self._next_rv()

    def _create_pod(
        self,
        namespace: str,
        lws: dict[str, Any],
        owner: dict[str, Any],
        template: dict[str, Any],
        pod_name: str,
        g: int,
        w: int,
        size: int,
        zone: str | None,
    ) -> dict[str, Any]:
        name = lws["metadata"]["name"]
        spec = copy.deepcopy(template.get("spec", {}))
        env = [
            {"name": "LWS_LEADER_ADDRESS", "value": f"{name}-{g}.{name}.{namespace}"},
            {"name": "LWS_GROUP_SIZE", "value": str(size)},
            {"name": "LWS_WORKER_INDEX", "value": str(w)},
        ]
        for container in spec.get("containers", []):
            container["env"] = [*container.get("env", []), *env]
        labels = {
            **template.get("metadata", {}).get("labels", {}),
            LWS_PREFIX + "name": name,
            LWS_PREFIX + "group-index": str(g),
            LWS_PREFIX + "worker-index": str(w),
            LWS_PREFIX + "group-key": f"{name}-{g}-key",
            LWS_PREFIX + "template-revision-hash": "fakehash",
        }
        if zone:
            labels.setdefault("vllm-lws-lab.io/zone", zone)
        pod = {
            "metadata": {
                "name": pod_name,
                "labels": labels,
                "ownerReferences": [owner],
                "annotations": {LWS_PREFIX + "size": str(size)},
            },
            "spec": spec,
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
        }
        return self.put("", "pods", namespace, pod)

    def _progress_pod(
        self, namespace: str, pod: dict[str, Any], zone: str | None, now: float
    ) -> bool:
        status = pod["status"]
        if status.get("phase") == "Running":
            return True
        if not pod["spec"].get("nodeName"):
            node = self._node_for(zone)
            if node is None:
                nodes = len(self.names("", "nodes"))
                if not self._pod_state.setdefault(pod["metadata"]["uid"], {}).get("warned"):
                    self._pod_state[pod["metadata"]["uid"]]["warned"] = True
                    self._event(
                        namespace,
                        pod,
                        "Pod",
                        "FailedScheduling",
                        f"0/{nodes} nodes are available: {nodes} node(s) didn't match Pod's "
                        "node affinity/selector.",
                        "Warning",
                    )
                return False
            pod["spec"]["nodeName"] = node
            self._pod_state.setdefault(pod["metadata"]["uid"], {})["scheduled_s"] = now
        scheduled_s = self._pod_state.get(pod["metadata"]["uid"], {}).get("scheduled_s", now)
        if now - scheduled_s < self.ready_delay_s:
            return False
        index = sum(1 for k in self.objects if k[1] == "pods")
        pod["status"] = {
            "phase": "Running",
            "podIP": f"10.0.{index // 250}.{index % 250 + 1}",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": c.get("name", "main"),
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {}},
                }
                for c in pod["spec"].get("containers", [])
            ],
        }
        pod["metadata"]["resourceVersion"] = self._next_rv()
        return True
