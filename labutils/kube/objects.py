"""Read rendered manifests (a folder of YAML or a list of dicts) in the order to apply them."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from labutils.errors import ManifestError
from labutils.kube.labels import LAB_LABEL, LAB_SELECTOR, ZONE_LABEL

__all__ = ["LAB_LABEL", "LAB_SELECTOR", "ZONE_LABEL", "apply_order", "load_rendered"]


# Dependencies first: a namespace before what lives in it, a Service before the route to it.
_ORDER = (
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "NetworkPolicy",
    "EC2NodeClass",
    "NodePool",
    "PersistentVolumeClaim",
    "Job",
    "Service",
    "LeaderWorkerSet",
    "HorizontalPodAutoscaler",
    "Gateway",
    "HTTPRoute",
    "BackendTrafficPolicy",
    "PodMonitor",
)


def apply_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``objects`` sorted so that each one's dependencies come first (stable otherwise)."""
    rank = {kind: i for i, kind in enumerate(_ORDER)}
    return sorted(objects, key=lambda o: rank.get(str(o.get("kind")), len(_ORDER)))


def load_rendered(
    source: Path | str | Iterable[dict[str, Any]], *, namespace: str
) -> list[dict[str, Any]]:
    """Objects to apply from a ``labctl render --out DIR`` folder or a list of dicts.

    Skips ``optional/`` (KEDA objects are never applied together with the HPAs),
    ``participant/`` (``labctl participants create`` applies it) and Secrets without values
    (the rendered Secrets are templates; their values come from the environment).
    Namespaced objects without a namespace get ``namespace``.

    Raises:
        ManifestError: the folder is missing, or a file is not YAML or not Kubernetes objects.
    """
    if isinstance(source, str | Path):
        objects = _read_dir(Path(source))
    else:
        objects = [copy.deepcopy(o) for o in source]
    out = []
    for obj in objects:
        if obj.get("kind") == "Secret" and not (obj.get("data") or obj.get("stringData")):
            continue
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            meta.setdefault("namespace", namespace)
        out.append(obj)
    return apply_order(out)


def _read_dir(folder: Path) -> list[dict[str, Any]]:
    if not folder.is_dir():
        raise ManifestError(
            f"{folder}: rendered manifests folder not found; run labctl render --out {folder}"
        )
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.rglob("*.y*ml")):
        if {"optional", "participant"} & set(path.relative_to(folder).parts):
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ManifestError(
                f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
            ) from None
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                # e.g. Helm values rendered next to the objects: not ours to apply
                warnings.warn(
                    f"{path}: skipped a document that is not a Kubernetes object", stacklevel=2
                )
                continue
            if doc["kind"].endswith("List") and "items" in doc:
                objects.extend(doc["items"])
            else:
                objects.append(doc)
    return objects
