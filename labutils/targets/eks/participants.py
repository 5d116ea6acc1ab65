"""Per-participant namespaces with the RBAC and GPU quota from the rendered manifests.

``create_participants`` makes ``<prefix>-p01 ... -pNN`` namespaces labelled as the lab's, then
server-side applies the Role / RoleBinding / ResourceQuota (and ServiceAccount, if any) found in
the rendered ``cluster/rbac.yaml`` into each (their own ``namespace`` is replaced).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from kubernetes.client.exceptions import ApiException

from labutils._progress import progress_bar
from labutils.errors import ConfigError, ManifestError, WaitTimeout
from labutils.kube.objects import LAB_LABEL
from labutils.targets.eks._connect import FIELD_MANAGER, Connection, api_errors

__all__ = ["PARTICIPANT_LABEL", "RBAC_FILE", "create_participants", "delete_participants"]

PARTICIPANT_LABEL = "vllm-lws-lab.io/participant"
RBAC_FILE = Path("cluster") / "rbac.yaml"
_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ResourceQuota")


def _rbac_objects(rendered_dir: Path) -> list[dict[str, Any]]:
    path = Path(rendered_dir) / RBAC_FILE
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: participant RBAC not found (expected Role/RoleBinding/ResourceQuota); "
            f"run labctl render --out {rendered_dir}"
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML ({exc})") from None
    objects = [d for d in docs if isinstance(d, dict) and d.get("kind") in _KINDS]
    if not objects:
        raise ManifestError(f"{path}: no {', '.join(_KINDS)} objects in it")
    return objects


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-p{i:02d}" for i in range(1, count + 1)]


def create_participants(
    conn: Connection, count: int, rendered_dir: Path, *, prefix: str = "vllm-lab"
) -> pd.DataFrame:
    """Create ``count`` participant namespaces with RBAC and quota (idempotent).

    Returns:
        One row per object: namespace, kind, name.

    Raises:
        ConfigError: ``count`` is not 1..99.
        ManifestError: ``cluster/rbac.yaml`` is missing from ``rendered_dir``.
    """
    if not 1 <= count <= 99:
        raise ConfigError(f"participants: count {count} must be between 1 and 99")
    templates = _rbac_objects(rendered_dir)
    ns_resource = conn.resource("v1", "Namespace")
    rows = []
    for namespace in progress_bar(_names(prefix, count), desc="participants", leave=False):
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {LAB_LABEL: "vllm-lws-lab", PARTICIPANT_LABEL: namespace},
            },
        }
        with api_errors(f"apply Namespace {namespace}", conn):
            ns_resource.server_side_apply(body=body, name=namespace, field_manager=FIELD_MANAGER)
        rows.append({"namespace": namespace, "kind": "Namespace", "name": namespace})
        for template in templates:
            obj = copy.deepcopy(template)
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = namespace
            meta.setdefault("labels", {})[LAB_LABEL] = "vllm-lws-lab"
            for subject in obj.get("subjects") or []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
            resource = conn.resource(obj["apiVersion"], obj["kind"])
            with api_errors(f"apply {obj['kind']} {namespace}/{meta['name']}", conn):
                resource.server_side_apply(
                    body=obj, name=meta["name"], namespace=namespace, field_manager=FIELD_MANAGER
                )
            rows.append({"namespace": namespace, "kind": obj["kind"], "name": meta["name"]})
    return pd.DataFrame(rows, columns=["namespace", "kind", "name"])


def delete_participants(
    conn: Connection, *, yes: bool = False, timeout_s: float = 300.0, poll_s: float = 1.0
) -> pd.DataFrame:
    """Delete every participant namespace (label ``vllm-lws-lab.io/participant``).

    Dry run unless ``yes``; with ``yes`` waits until the namespaces are gone.
    """
    ns_resource = conn.resource("v1", "Namespace")
    with api_errors("list participant namespaces", conn):
        items = ns_resource.get(label_selector=PARTICIPANT_LABEL).to_dict().get("items", [])
    names = sorted(
        n["metadata"]["name"]
        for n in items
        if (n["metadata"].get("labels") or {}).get(LAB_LABEL) == "vllm-lws-lab"
    )
    action = "deleted" if yes else "would delete (dry run: pass --yes)"
    frame = pd.DataFrame(
        [{"namespace": n, "kind": "Namespace", "name": n, "action": action} for n in names],
        columns=["namespace", "kind", "name", "action"],
    )
    if not yes:
        return frame
    for name in names:
        with api_errors(f"delete Namespace {name}", conn):
            try:
                ns_resource.delete(name=name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
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
    return frame
