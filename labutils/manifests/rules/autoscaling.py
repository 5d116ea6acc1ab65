"""HPA and KEDA rules: targets, metrics served by the adapter rules, one autoscaler per
LWS, KEDA's query (docs/eks-review.md #5).
"""

from __future__ import annotations

import re

import yaml

from labutils.manifests.loader import FieldPath, LoadedObject
from labutils.manifests.rules._base import (
    _VLLM_ADAPTER_METRICS,
    _is_optional,
    _Set,
)

__all__ = ["_rule_autoscaling"]


def _adapter_metrics(s: _Set) -> set[str] | None:
    names: set[str] = set()
    found = False
    for cm in s.of("ConfigMap"):
        for value in (cm.get("data") or {}).values():
            if "seriesQuery" not in str(value):
                continue
            found = True
            try:
                config = yaml.safe_load(str(value)) or {}
            except yaml.YAMLError:
                continue
            for rule in config.get("rules") or []:
                as_name = ((rule or {}).get("name") or {}).get("as")
                if as_name:
                    names.add(str(as_name))
    return names if found else None


def _rule_autoscaling(s: _Set) -> None:
    lws_names = {o.name for o in s.of("LeaderWorkerSet")}
    served = _adapter_metrics(s)
    targets: dict[str, list[LoadedObject]] = {}
    for hpa in s.of("HorizontalPodAutoscaler"):
        ref = hpa.get("spec", "scaleTargetRef") or {}
        targets.setdefault(str(ref.get("name")), []).append(hpa)
        is_lws = ref.get("kind") == "LeaderWorkerSet" or ref.get("name") in lws_names
        if is_lws and ref.get("apiVersion") != "leaderworkerset.x-k8s.io/v1":
            s.add(
                hpa,
                ("spec", "scaleTargetRef", "apiVersion"),
                "must be leaderworkerset.x-k8s.io/v1",
            )
        if s.missing("LeaderWorkerSet", str(ref.get("name"))):
            s.add(
                hpa,
                ("spec", "scaleTargetRef", "name"),
                f"scale target {ref.get('kind')}/{ref.get('name')} does not exist here; "
                f"choose one of: {', '.join(sorted(lws_names)) or '(no LeaderWorkerSet)'}",
            )
        lo, hi = hpa.get("spec", "minReplicas", default=1), hpa.get("spec", "maxReplicas")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            s.add(hpa, ("spec", "minReplicas"), f"minReplicas {lo} > maxReplicas {hi}")
        if hpa.get("spec", "behavior") is None:
            s.add(hpa, ("spec", "behavior"), "set behavior (scale-up/down policies and windows)")
        for mi, metric in enumerate(hpa.get("spec", "metrics") or []):
            mpath: FieldPath = ("spec", "metrics", mi)
            if metric.get("type") == "Resource":
                res = (metric.get("resource") or {}).get("name")
                s.add(
                    hpa,
                    (*mpath, "resource", "name"),
                    f"{res} utilisation is not a GPU-inference signal (and is relative to the "
                    "leader's requests); scale on vllm_num_requests_waiting",
                )
            if metric.get("type") == "Pods":
                name = ((metric.get("pods") or {}).get("metric") or {}).get("name")
                choices = served if served is not None else _VLLM_ADAPTER_METRICS
                if name not in choices:
                    s.add(
                        hpa,
                        (*mpath, "pods", "metric", "name"),
                        f"metric {name!r} is served by no prometheus-adapter rule (no server "
                        f"exposes it); choose one of: {', '.join(sorted(choices))}",
                    )
    for so in s.of("ScaledObject"):
        for ti, trigger in enumerate(so.get("spec", "triggers") or []):
            query = str((trigger.get("metadata") or {}).get("query", ""))
            average = trigger.get("metricType", "AverageValue") == "AverageValue"
            if average and re.match(r"\s*avg\b", query):
                s.add(
                    so,
                    ("spec", "triggers", ti, "metadata", "query"),
                    "avg() with metricType AverageValue is divided by the replicas twice (the "
                    "HPA averages an External metric itself) and under-scales by the group "
                    "count; use sum()",
                )
        name = str(so.get("spec", "scaleTargetRef", "name"))
        clash = [h for h in targets.get(name, []) if _is_optional(h) == _is_optional(so)]
        if clash:
            s.add(
                so,
                ("spec", "scaleTargetRef", "name"),
                f"{name} is also scaled by HPA {clash[0].name}: KEDA owns its own HPA, "
                "never apply both",
            )
    for name, hpas in targets.items():
        if len(hpas) > 1:
            s.add(hpas[1], ("spec", "scaleTargetRef", "name"), f"second HPA on {name}")
    if s.is_folder and (targets or s.of("ScaledObject")):
        scaled = set(targets) | {
            str(o.get("spec", "scaleTargetRef", "name")) for o in s.of("ScaledObject")
        }
        for lws in (o for o in s.everything if o.kind == "LeaderWorkerSet"):
            if lws.name not in scaled:
                s.add(lws, ("metadata", "name"), "no HPA scales this LeaderWorkerSet (one per LWS)")
