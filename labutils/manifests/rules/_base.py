"""Shared pieces of the lab's rules: constants, the object set under check, field paths."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from labutils.manifests.loader import FieldPath, LoadedObject, Problem

__all__ = [
    "GPU",
    "LWS_NAME",
    "LWS_PREFIX",
    "LWS_WORKER_INDEX",
    "PART_OF",
    "PART_OF_VALUE",
    "ZONE_KEY",
    "ZONE_LABEL",
    "fmt_path",
]

PART_OF = "app.kubernetes.io/part-of"
PART_OF_VALUE = "vllm-lws-lab"
ZONE_LABEL = "vllm-lws-lab.io/zone"
ZONE_KEY = "topology.kubernetes.io/zone"
LWS_PREFIX = "leaderworkerset.sigs.k8s.io/"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
_APP_NAME = "app.kubernetes.io/name"
LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
GPU = "nvidia.com/gpu"
_LB = "service.beta.kubernetes.io/aws-load-balancer-"
# AWS Load Balancer Controller service annotations (docs: guide/service/annotations); any other
# `aws-load-balancer-*` key is silently ignored by the controller, i.e. a bug.
_KNOWN_LB_ANNOTATIONS = {
    "type",
    "nlb-target-type",
    "scheme",
    "internal",
    "name",
    "attributes",
    "healthcheck-protocol",
    "healthcheck-port",
    "healthcheck-path",
    "healthcheck-interval",
    "healthcheck-timeout",
    "healthcheck-healthy-threshold",
    "healthcheck-unhealthy-threshold",
    "healthcheck-success-codes",
    "cross-zone-load-balancing-enabled",
    "subnets",
    "additional-resource-tags",
    "ip-address-type",
    "security-groups",
    "manage-backend-security-group-rules",
    "target-group-attributes",
    "proxy-protocol",
    "ssl-cert",
    "ssl-ports",
    "ssl-negotiation-policy",
    "backend-protocol",
    "alpn-policy",
    "load-balancer-source-ranges",
    "eip-allocations",
    "private-ipv4-addresses",
    "target-node-labels",
    "access-log-enabled",
    "access-log-s3-bucket-name",
    "access-log-s3-bucket-prefix",
    "inbound-sg-rules-on-private-link-traffic",
    "enable-prefix-for-ipv6-source-nat",
    "source-nat-ipv6-prefixes",
    "listener-attributes",
}
# NLB target-group health-check ranges (AWS ELB docs).
_HC_RANGES = {
    "healthcheck-interval": (5, 300),
    "healthcheck-timeout": (2, 120),
    "healthcheck-healthy-threshold": (2, 10),
    "healthcheck-unhealthy-threshold": (2, 10),
}
# The stock image dropped Ray around v0.19; older tags are years out of date.
_MIN_VLLM = (0, 19)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
# vLLM gauges as a prometheus-adapter rule renames them (`vllm:x` -> `vllm_x`).
_VLLM_ADAPTER_METRICS = {
    "vllm_num_requests_waiting",
    "vllm_num_requests_running",
    "vllm_kv_cache_usage_perc",
}
# LWS v0.10 restart policies that recreate the whole group (AfterStart: only once every pod
# of it has started, so a cold start's Pending worker does not recycle the group).
_GROUP_RESTART = ("RecreateGroupAfterStart", "RecreateGroupOnPodRestart")
# torch.distributed's default init timeout for NCCL (vLLM ParallelConfig docstring, v0.32.0).
_TORCH_DIST_TIMEOUT_S = 600
# vLLM v0.32.0 --api-key guards only these prefixes (vllm/entrypoints/serve/middleware/
# authenticate.py GUARDED_PREFIX); /invocations, /tokenize, /scale_elastic_ep... are open.
_API_KEY_GUARDED = ("/v1", "/v2", "/inference", "/cohere")
_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
# Kinds that exist once per zone and must say which.
_ZONE_KINDS = {"LeaderWorkerSet", "HorizontalPodAutoscaler", "NodePool", "ScaledObject"}


@dataclass
class _Set:
    """The objects under check. ``objects`` passed their schema, so rules may rely on its
    shapes; ``everything`` also holds the schema-invalid ones (already reported), which only
    count for label checks and for "does it exist" questions."""

    objects: list[LoadedObject]
    everything: list[LoadedObject]
    is_folder: bool
    problems: list[Problem]

    def of(self, kind: str) -> list[LoadedObject]:
        return [o for o in self.objects if o.kind == kind]

    def named(self, kind: str, name: str, namespace: str | None = None) -> LoadedObject | None:
        for o in self.objects:
            if (
                o.kind == kind
                and o.name == name
                and (namespace is None or o.namespace == namespace)
            ):
                return o
        return None

    def missing(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """True when a whole folder is checked and no object of that kind/name exists at all."""
        if not self.is_folder:
            return False
        return not any(
            o.kind == kind and o.name == name and (namespace is None or o.namespace == namespace)
            for o in self.everything
        )

    def add(self, obj: LoadedObject, path: FieldPath, message: str) -> None:
        self.problems.append(
            Problem(str(obj.file), obj.line_of(path), obj.ref, fmt_path(path), message)
        )


def fmt_path(path: FieldPath) -> str:
    """``("spec", "containers", 0, "env")`` -> ``spec.containers[0].env`` (dotted keys quoted)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def _zone_dir(obj: LoadedObject) -> str | None:
    parts = obj.file.parts
    for i, part in enumerate(parts[:-1]):
        if part == "zones" and i + 1 < len(parts) - 1:
            return parts[i + 1]
    return None


def _is_optional(obj: LoadedObject) -> bool:
    return "optional" in obj.file.parts


def _affinity_zones(spec: Any) -> list[str] | None:
    terms = (
        (((spec or {}).get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    zones: list[str] = []
    found = False
    for term in terms or []:
        for expr in (term or {}).get("matchExpressions", []) or []:
            if expr.get("key") == ZONE_KEY and expr.get("operator") == "In":
                found = True
                zones.extend(str(v) for v in expr.get("values", []) or [])
    selector_zone = ((spec or {}).get("nodeSelector") or {}).get(ZONE_KEY)
    if selector_zone:
        found = True
        zones.append(str(selector_zone))
    return zones if found else None


def _expected_zone(obj: LoadedObject) -> str | None:
    return _zone_dir(obj) or obj.labels.get(ZONE_LABEL)


def _templates(lws: LoadedObject) -> Iterator[tuple[str, FieldPath, dict[str, Any]]]:
    base: FieldPath = ("spec", "leaderWorkerTemplate")
    leader = lws.get(*base, "leaderTemplate")
    worker = lws.get(*base, "workerTemplate")
    if isinstance(leader, dict):
        yield "leader", (*base, "leaderTemplate"), leader
    if isinstance(worker, dict):
        yield "worker", (*base, "workerTemplate"), worker


def _pod_labels(lws: LoadedObject, role: str) -> dict[str, str]:
    tmpl_key = "leaderTemplate" if role == "leader" else "workerTemplate"
    tmpl = lws.get("spec", "leaderWorkerTemplate", tmpl_key)
    if tmpl is None and role == "leader":  # LWS uses the worker template for leaders too
        tmpl = lws.get("spec", "leaderWorkerTemplate", "workerTemplate")
    labels = ((tmpl or {}).get("metadata") or {}).get("labels") or {}
    out = {str(k): str(v) for k, v in labels.items()}
    # Labels the LWS controller adds to every pod (pkg/webhooks/pod_webhook.go).
    out[LWS_NAME] = lws.name
    out[LWS_WORKER_INDEX] = "0" if role == "leader" else "1"
    return out


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())
