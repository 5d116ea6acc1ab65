"""Connect to a cluster (kubeconfig/context or in-cluster) and turn client failures into one line.

Every Kubernetes call in :mod:`labutils.targets.eks` goes through :func:`api_errors`, so a wrong
context, an unreachable server, a missing CRD, a 403 or a conflict each read as one
:class:`~labutils.errors.ClusterError` line that names the thing and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from platformdirs import user_cache_dir
from urllib3.exceptions import HTTPError as Urllib3Error

from labutils.errors import ClusterError

__all__ = ["SA_NAMESPACE_FILE", "Connection", "api_errors", "connect", "crd_hint"]

FIELD_MANAGER = "labutils"
REQUEST_TIMEOUT_S = (5.0, 60.0)  # (connect, read) for every API request

# How to install what the lab needs when discovery says a kind is missing (the pinned commands
# are in labutils/data/addons.yaml; `labctl instructor addons --print` prints them).
_ADDONS = "labctl instructor addons --print shows the pinned install command"
_CRD_FIXES = {
    "leaderworkerset.x-k8s.io": f"install LeaderWorkerSet ({_ADDONS})",
    "gateway.networking.k8s.io": f"install the Gateway API CRDs and Envoy Gateway ({_ADDONS})",
    "gateway.envoyproxy.io": f"install Envoy Gateway ({_ADDONS})",
    "keda.sh": f"install KEDA ({_ADDONS})",
    "monitoring.coreos.com": f"install kube-prometheus-stack ({_ADDONS})",
    "karpenter.sh": f"install Karpenter ({_ADDONS})",
    "autoscaling": "the cluster is too old for autoscaling/v2 HPAs (needs Kubernetes >= 1.23)",
}


def crd_hint(api_version: str) -> str:
    """How to install the API group of ``api_version`` (for 'kind not found' errors)."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    return _CRD_FIXES.get(group, f"install the CRDs that serve {api_version}")


# The namespace of a pod's ServiceAccount, mounted by the kubelet (in-cluster config).
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class Connection:
    """An authenticated client for one cluster (typed ``api_client`` and ``dynamic``).

    ``namespace`` is the namespace the credential is pinned to, as kubectl sees it: the
    kubeconfig context's ``namespace`` or, in a pod, its ServiceAccount's; ``None`` for an
    unpinned (instructor) context. ``in_cluster`` says the pod's ServiceAccount is used.
    """

    api_client: client.ApiClient
    host: str
    context: str
    cache_file: Path
    _dynamic: DynamicClient | None = None
    namespace: str | None = None
    in_cluster: bool = False

    @property
    def dynamic(self) -> DynamicClient:
        """The dynamic client; created (discovery: ``GET /version``) on first use."""
        if self._dynamic is None:
            with api_errors(f"discovery at {self.host}", self):
                self._dynamic = DynamicClient(self.api_client, cache_file=str(self.cache_file))
        return self._dynamic

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic-client resource for ``kind``; ClusterError naming the CRD if missing."""
        dynamic = self.dynamic
        with api_errors(f"discovery of {api_version} {kind}", self):
            try:
                return dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise ClusterError(
                    f"{kind} ({api_version}) is not served by {self.host} (CRD missing); "
                    f"{crd_hint(api_version)}"
                ) from None

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header the client sends (for API-server proxy URLs)."""
        # auth_settings() runs the refresh hook first, so exec-plugin (aws eks) tokens are fresh.
        auth = self.api_client.configuration.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            return {"Authorization": str(auth["value"])}
        return {}


def _kubeconfig_path(kubeconfig: str | Path | None) -> str:
    if kubeconfig:
        return str(Path(kubeconfig).expanduser())
    env = os.environ.get("KUBECONFIG", "")
    return env.split(os.pathsep)[0] if env else str(Path("~/.kube/config").expanduser())


def connect(
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    *,
    in_cluster: bool | None = None,
    cache_dir: Path | None = None,
) -> Connection:
    """Connect like kubectl: ``kubeconfig`` or ``$KUBECONFIG`` or ``~/.kube/config``.

    In a pod (``KUBERNETES_SERVICE_HOST`` set, no kubeconfig given) the service account is used.

    Raises:
        ClusterError: the kubeconfig is missing or invalid, or ``context`` is not in it.
    """
    configuration = client.Configuration()
    path = _kubeconfig_path(kubeconfig)
    use_in_cluster = in_cluster
    if use_in_cluster is None:
        use_in_cluster = (
            not kubeconfig
            and not os.environ.get("KUBECONFIG")
            and not Path(path).exists()
            and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        )
    namespace: str | None = None
    if use_in_cluster:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ClusterError(f"in-cluster config: {exc}; pass --kubeconfig instead") from None
        chosen = "in-cluster"
        try:
            namespace = SA_NAMESPACE_FILE.read_text().strip() or None
        except OSError:
            namespace = None
    else:
        if not Path(path).exists():
            raise ClusterError(
                f"kubeconfig {path} not found; pass --kubeconfig or set KUBECONFIG "
                "(for EKS: aws eks update-kubeconfig --name CLUSTER)"
            )
        try:
            contexts, current = config.list_kube_config_contexts(config_file=path)
        # A truncated or non-mapping file fails inside the client as YAML/Type/KeyError.
        except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())
            raise ClusterError(
                f"kubeconfig {path} is not valid ({type(exc).__name__}: {detail}); "
                "regenerate it: aws eks update-kubeconfig --name CLUSTER"
            ) from None
        names = [c["name"] for c in contexts]
        if context and context not in names:
            raise ClusterError(
                f"context {context!r} is not in kubeconfig {path}; choose one of: "
                f"{', '.join(names) or '(none)'} (or omit --context for the current one)"
            )
        chosen = context or (current or {}).get("name", "")
        picked = next((c for c in contexts if c["name"] == chosen), None) or {}
        namespace = (picked.get("context") or {}).get("namespace") or None
        try:
            config.load_kube_config(
                config_file=path, context=chosen or None, client_configuration=configuration
            )
        except ConfigException as exc:
            raise ClusterError(f"kubeconfig {path} context {chosen!r}: {exc}") from None
    # One retry at most: a dead server should fail in seconds, not minutes.
    configuration.retries = 1
    api_client = client.ApiClient(configuration)
    _default_request_timeout(api_client)
    host = configuration.host
    cache = cache_dir or Path(user_cache_dir("vllm-lws-lab")) / "discovery"
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{host}|{chosen}".encode()).hexdigest()[:16]
    cache_file = cache / f"{digest}.json"
    return Connection(
        api_client=api_client,
        host=host,
        context=chosen,
        cache_file=cache_file,
        namespace=namespace,
        in_cluster=bool(use_in_cluster),
    )


def _default_request_timeout(api_client: client.ApiClient) -> None:
    # The client sends no timeout unless each call passes one, so a hung API server would hang
    # every wait; give every request (connect, read) limits unless the caller set its own.
    send = api_client.rest_client.request

    def _request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = _request_timeout or REQUEST_TIMEOUT_S
        return send(*args, **kwargs)

    api_client.rest_client.request = _request  # type: ignore[method-assign]


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or exc.status).replace("\n", " ")


def _translate(exc: BaseException, what: str, host: str, context: str) -> ClusterError:
    if isinstance(exc, ApiException):
        status = exc.status
        message = _status_message(exc)
        if status == 401:
            return ClusterError(
                f"{what}: unauthorized at {host} (context {context!r}): {message}; refresh "
                "credentials (aws eks update-kubeconfig / aws sso login)"
            )
        if status == 403:
            return ClusterError(
                f"{what}: forbidden: {message}; ask the instructor for RBAC on it "
                "(labctl participants create) or use a context that has access"
            )
        if status == 404:
            return ClusterError(f"{what}: not found: {message}")
        if status == 409:
            return ClusterError(
                f"{what}: conflict: {message}; another field manager owns these fields (e.g. "
                "the HPA owns spec.replicas): apply with force=True to take them over"
            )
        if status == 422:
            return ClusterError(f"{what}: invalid: {message}; fix the manifest field named")
        return ClusterError(f"{what}: HTTP {status}: {message}")
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).split(":")[-1].strip() or type(exc).__name__
    return ClusterError(
        f"{what}: API server {host} unreachable ({text}); check the cluster endpoint, your "
        f"network/VPN and context {context!r} (kubectl --context {context} get --raw /version)"
    )


@contextmanager
def api_errors(what: str, conn: Connection | None = None) -> Iterator[None]:
    """Re-raise client failures inside the block as one-line :class:`ClusterError`.

    Args:
        what: the operation and object, e.g. ``"apply LeaderWorkerSet vllm-lab/vllm-us-west-2a"``.
        conn: the connection (its host and context appear in unreachable/401 messages).
    """
    host = conn.host if conn else "?"
    context = conn.context if conn else "?"
    try:
        yield
    except (ApiException, Urllib3Error, ConnectionError, OSError) as exc:
        raise _translate(exc, what, host, context) from None
