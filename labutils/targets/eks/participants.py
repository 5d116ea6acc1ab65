"""Participants: a namespace, an identity and a kubeconfig each (``labctl participants``).

``create_participants`` renders the lab for each participant namespace
(``render(namespace=<prefix>NN, participant=True)``) and applies, as the instructor, what the
participant must not write themselves: the namespace, its ResourceQuota and NetworkPolicies,
their ServiceAccount ``lab-participant`` with its Role and RoleBinding (``participant/access.yaml``:
one subject, this namespace only), their JupyterLab and ``lab.yaml``, and the Secrets (a fresh
vLLM API key per participant; the Hugging Face token when given). It then asks the TokenRequest
API for a token of that ServiceAccount, valid for the workshop, and writes
``<out>/<namespace>/kubeconfig`` (context pinned to the namespace) to hand out.
``delete_participants`` deletes the namespaces: the ServiceAccounts go with them, and with them
every token issued for them (bound tokens are checked against the live ServiceAccount), so the
handed-out kubeconfigs stop working.
"""

from __future__ import annotations

import base64
import copy
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labutils._progress import progress_bar
from labutils.config import LabConfig, load_config, manifests_dir
from labutils.errors import ConfigError, WaitTimeout
from labutils.kube.objects import LAB_LABEL
from labutils.manifests.render import PARTICIPANT_DIR, render
from labutils.manifests.settings import cluster_settings
from labutils.targets.eks._connect import FIELD_MANAGER, Connection, api_errors

__all__ = [
    "PARTICIPANT_LABEL",
    "SERVICE_ACCOUNT",
    "create_participants",
    "delete_participants",
    "participant_names",
]

PARTICIPANT_LABEL = "vllm-lws-lab.io/participant"
SERVICE_ACCOUNT = "lab-participant"
FLEET_VIEWER_ROLE = "lab-fleet-viewer"
# What the instructor applies into each participant namespace, from the participant render.
_INSTRUCTOR_FILES = (
    "cluster/namespace.yaml",
    "cluster/quota.yaml",
    "cluster/networkpolicy.yaml",
    f"{PARTICIPANT_DIR}/access.yaml",
    f"{PARTICIPANT_DIR}/lab-config.yaml",
    f"{PARTICIPANT_DIR}/jupyterlab.yaml",
)
_COLUMNS = ["namespace", "kind", "name", "action"]
MAX_TOKEN_HOURS = 48.0


def participant_names(prefix: str, count: int, start: int = 1) -> list[str]:
    """``<prefix>01 .. <prefix>NN`` (two digits, as ``lab.yaml participants.prefix`` says)."""
    return [f"{prefix}{i:02d}" for i in range(start, start + count)]


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _apply(conn: Connection, obj: dict[str, Any]) -> None:
    resource = conn.resource(obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    namespace = meta.get("namespace") if resource.namespaced else None
    where = f"{namespace}/" if namespace else ""
    with api_errors(f"apply {obj['kind']} {where}{meta['name']}", conn):
        resource.server_side_apply(
            body=obj, name=meta["name"], namespace=namespace, field_manager=FIELD_MANAGER
        )


def _secret(namespace: str, name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": {LAB_LABEL: "vllm-lws-lab"}},
        "stringData": {key: value},
    }


def _ca_data(conn: Connection) -> str | None:
    ca_file = conn.api_client.configuration.ssl_ca_cert
    if not ca_file:
        return None
    return base64.b64encode(Path(ca_file).read_bytes()).decode()


def _kubeconfig(conn: Connection, namespace: str, token: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": conn.host}
    ca = _ca_data(conn)
    if ca:
        cluster["certificate-authority-data"] = ca
    name = f"vllm-lws-lab-{namespace}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": "lab", "user": name, "namespace": namespace}}
        ],
        "current-context": name,
    }


def _request_token(conn: Connection, namespace: str, hours: float) -> tuple[str, str]:
    core = client.CoreV1Api(conn.api_client)
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=int(hours * 3600))
    )
    with api_errors(f"create ServiceAccount token {namespace}/{SERVICE_ACCOUNT}", conn):
        answer = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, namespace, body)
    status = answer.status
    if status is None or not status.token:
        raise ConfigError(f"TokenRequest for {namespace}/{SERVICE_ACCOUNT} returned no token")
    return str(status.token), str(status.expiration_timestamp)


def _write_folder(folder: Path, kubeconfig: dict[str, Any], namespace: str, lab_ns: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kubeconfig"
    # created private: it holds a bearer token
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump(kubeconfig, sort_keys=False))
    (folder / "README.txt").write_text(
        f"Your lab namespace is {namespace}.\n"
        f"  export KUBECONFIG=$PWD/kubeconfig LAB_TARGET=eks LAB_NAMESPACE={lab_ns}\n"
        f"  kubectl -n {namespace} logs deploy/jupyterlab | grep token=   # JupyterLab's token\n"
        f"  kubectl -n {namespace} port-forward svc/jupyterlab 8888        # then open "
        "http://127.0.0.1:8888/lab\n"
        "The notebooks run inside that JupyterLab (in the cluster). The kubeconfig stops "
        "working when the instructor deletes your namespace or the token expires.\n"
    )
    return path


def create_participants(
    conn: Connection,
    count: int,
    *,
    out_dir: str | Path,
    config: LabConfig | None = None,
    source: str | Path | None = None,
    hours: float = 12.0,
    start: int = 1,
    hf_token: str | None = None,
) -> pd.DataFrame:
    """Create ``count`` participants: namespace, identity, rights, JupyterLab and a kubeconfig.

    Idempotent (server-side apply); running it again issues fresh tokens and a new API key.

    Args:
        conn: an instructor connection (allowed to create namespaces and RBAC).
        count: how many participants (1..99).
        out_dir: where ``<namespace>/kubeconfig`` is written for each participant.
        config: the lab config (default: ``manifests/lab.yaml``).
        source: the source manifests folder (default: ``manifests/``).
        hours: how long the tokens stay valid (the workshop plus a margin; at most 48).
        start: number of the first participant (``start=31`` adds p31...).
        hf_token: the Hugging Face token for the gated model (default ``$HF_TOKEN``).

    Returns:
        One row per object: namespace, kind, name, action.

    Raises:
        ConfigError: ``count``, ``start`` or ``hours`` out of range.
        ClusterError: the connection may not create namespaces or RBAC.
    """
    if not 1 <= count <= 99 or not 1 <= start <= 100 - count:
        raise ConfigError(f"participants: count {count} from {start} must stay within 1..99")
    if not 0 < hours <= MAX_TOKEN_HOURS:
        raise ConfigError(f"participants: --hours {hours:g} must be in (0, {MAX_TOKEN_HOURS:g}]")
    src = Path(source) if source else manifests_dir()
    cfg = config or load_config(src / "lab.yaml")
    settings = cluster_settings(cfg)
    fleet_ns = cfg.namespace
    hf_token = hf_token if hf_token is not None else os.environ.get("HF_TOKEN")
    out = Path(out_dir)
    rows: list[dict[str, str]] = []
    names = participant_names(settings.participant_prefix, count, start)
    with tempfile.TemporaryDirectory(prefix="lab-participants-") as tmp:
        if settings.profile == "shared-fleet":
            # the fleet's namespace and the read-only Role the participants are bound to
            fleet = Path(tmp) / "fleet"
            render(cfg, fleet, src)
            for rel in ("cluster/namespace.yaml", "cluster/fleet-viewer.yaml"):
                for obj in _load(fleet / rel):
                    _apply(conn, obj)
                    rows.append({"namespace": fleet_ns, "kind": obj["kind"],
                                 "name": obj["metadata"]["name"], "action": "applied"})  # fmt: skip
        for namespace in progress_bar(names, desc="participants", leave=False):
            rendered = Path(tmp) / namespace
            render(cfg, rendered, src, namespace=namespace, participant=True)
            for rel in _INSTRUCTOR_FILES:
                for obj in _load(rendered / rel):
                    obj = copy.deepcopy(obj)
                    meta = obj["metadata"]
                    meta.setdefault("labels", {})[LAB_LABEL] = "vllm-lws-lab"
                    if obj["kind"] == "Namespace":
                        meta["labels"][PARTICIPANT_LABEL] = namespace
                    if obj["kind"] == "ResourceQuota" and settings.profile == "shared-fleet":
                        # they watch the instructor's fleet: no GPUs of their own
                        obj["spec"]["hard"]["requests.nvidia.com/gpu"] = "0"
                    if obj["kind"] == "Deployment":
                        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
                        if image.startswith("REGISTRY/"):
                            rows.append({"namespace": namespace, "kind": "Deployment",
                                         "name": meta["name"], "action": "skipped: set "
                                         "participants.jupyter_image in lab.yaml"})  # fmt: skip
                            continue
                        _set_lab_namespace(obj, fleet_ns, namespace, settings.profile)
                    _apply(conn, obj)
                    rows.append({"namespace": namespace, "kind": obj["kind"],
                                 "name": meta["name"], "action": "applied"})  # fmt: skip
            secrets_to_apply = [
                _secret(namespace, "vllm-api-key", "api-key", secrets.token_urlsafe(32))
            ]
            if hf_token:
                secrets_to_apply.append(_secret(namespace, "hf-token", "token", hf_token))
            else:
                rows.append({"namespace": namespace, "kind": "Secret", "name": "hf-token",
                             "action": "skipped: set HF_TOKEN (gated model)"})  # fmt: skip
            for secret in secrets_to_apply:
                _apply(conn, secret)
                rows.append({"namespace": namespace, "kind": "Secret",
                             "name": secret["metadata"]["name"], "action": "applied"})  # fmt: skip
            if settings.profile == "shared-fleet" and fleet_ns != namespace:
                binding = _fleet_viewer_binding(fleet_ns, namespace)
                _apply(conn, binding)
                rows.append({"namespace": fleet_ns, "kind": "RoleBinding",
                             "name": binding["metadata"]["name"], "action": "applied"})  # fmt: skip
            token, expires = _request_token(conn, namespace, hours)
            lab_ns = fleet_ns if settings.profile == "shared-fleet" else namespace
            path = _write_folder(out / namespace, _kubeconfig(conn, namespace, token),
                                 namespace, lab_ns)  # fmt: skip
            rows.append({"namespace": namespace, "kind": "kubeconfig", "name": str(path),
                         "action": f"written (token valid until {expires})"})  # fmt: skip
    return pd.DataFrame(rows, columns=_COLUMNS)


def _set_lab_namespace(deployment: dict[str, Any], fleet_ns: str, own: str, profile: str) -> None:
    # The notebooks' namespace: the shared fleet's (read-only) or the participant's own.
    lab_ns = fleet_ns if profile == "shared-fleet" else own
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = [e for e in container.get("env") or [] if e.get("name") != "LAB_NAMESPACE"]
    container["env"] = [*env, {"name": "LAB_NAMESPACE", "value": lab_ns}]


def _fleet_viewer_binding(fleet_ns: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": f"{FLEET_VIEWER_ROLE}-{namespace}",
            "namespace": fleet_ns,
            "labels": {LAB_LABEL: "vllm-lws-lab", PARTICIPANT_LABEL: namespace},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FLEET_VIEWER_ROLE,
        },
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}],
    }


def delete_participants(
    conn: Connection,
    *,
    yes: bool = False,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    out_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Delete every participant namespace (label ``vllm-lws-lab.io/participant``).

    Dry run unless ``yes``; with ``yes`` it deletes the namespaces (their ServiceAccounts and so
    every token issued for them go too: the handed-out kubeconfigs stop working) and the
    fleet-viewer RoleBindings, waits until the namespaces are gone, and removes
    ``<out_dir>/<namespace>/`` when ``out_dir`` is given.
    """
    ns_resource = conn.resource("v1", "Namespace")
    with api_errors("list participant namespaces", conn):
        items = ns_resource.get(label_selector=PARTICIPANT_LABEL).to_dict().get("items", [])
    names = sorted(
        n["metadata"]["name"]
        for n in items
        if (n["metadata"].get("labels") or {}).get(LAB_LABEL) == "vllm-lws-lab"
    )
    bindings = conn.resource("rbac.authorization.k8s.io/v1", "RoleBinding")
    with api_errors("list fleet-viewer RoleBindings", conn):
        viewer = bindings.get(label_selector=PARTICIPANT_LABEL).to_dict().get("items", [])
    action = "deleted" if yes else "would delete (dry run: pass --yes)"
    rows = [{"namespace": n, "kind": "Namespace", "name": n, "action": action} for n in names]
    rows += [
        {"namespace": b["metadata"]["namespace"], "kind": "RoleBinding",
         "name": b["metadata"]["name"], "action": action}
        for b in viewer
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    if not yes:
        return frame
    for binding in viewer:
        meta = binding["metadata"]
        with api_errors(f"delete RoleBinding {meta['namespace']}/{meta['name']}", conn):
            try:
                bindings.delete(name=meta["name"], namespace=meta["namespace"])
            except ApiException as exc:
                if exc.status != 404:
                    raise
    for name in names:
        with api_errors(f"delete Namespace {name}", conn):
            try:
                ns_resource.delete(name=name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
    _wait_namespaces_gone(conn, names, timeout_s, poll_s)
    if out_dir is not None:
        for name in names:
            shutil.rmtree(Path(out_dir) / name, ignore_errors=True)
    return frame


def _wait_namespaces_gone(
    conn: Connection, names: list[str], timeout_s: float, poll_s: float
) -> None:
    ns_resource = conn.resource("v1", "Namespace")
    deadline = time.monotonic() + timeout_s
    remaining = list(names)
    with progress_bar(total=len(names), desc="deleting namespaces", leave=False) as bar:
        while remaining:
            still = []
            for name in remaining:
                with api_errors(f"get Namespace {name}", conn):
                    try:
                        ns_resource.get(name=name)
                        still.append(name)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
            bar.update(len(remaining) - len(still))
            remaining = still
            if remaining and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"Namespace {remaining[0]} still Terminating {timeout_s:g} s after delete; "
                    f"check its finalizers (kubectl get ns {remaining[0]} -o yaml)"
                )
            if remaining:
                time.sleep(poll_s)
