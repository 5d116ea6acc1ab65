"""Services/NLBs and Gateway API rules: leader-only selectors, AWS Load Balancer Controller
annotations and ranges, route backends and weights, the paths --api-key guards, traffic
policies (docs/eks-review.md #4, #10, #12).
"""

from __future__ import annotations

import re
from typing import Any

from labutils.manifests.loader import FieldPath, LoadedObject
from labutils.manifests.rules._base import (
    _API_KEY_GUARDED,
    _APP_NAME,
    _HC_RANGES,
    _KNOWN_LB_ANNOTATIONS,
    _LB,
    LWS_PREFIX,
    LWS_WORKER_INDEX,
    _int_or_none,
    _pod_labels,
    _selects,
    _Set,
)

__all__ = ["_rule_gateway_policies", "_rule_routes", "_rule_services"]


def _rule_services(s: _Set) -> None:
    lwss = s.of("LeaderWorkerSet")
    for svc in s.of("Service"):
        selector = svc.get("spec", "selector") or {}
        if not selector:
            continue  # headless/external services are not the lab's business
        keys = {str(k) for k in selector}
        if not any(k.startswith(LWS_PREFIX) for k in keys) and selector.get(_APP_NAME) != "vllm":
            continue  # not in front of vLLM (e.g. a participant's JupyterLab)
        leaders = [lws for lws in lwss if _selects(selector, _pod_labels(lws, "leader"))]
        workers = [lws for lws in lwss if _selects(selector, _pod_labels(lws, "worker"))]
        if workers:
            s.add(
                svc,
                ("spec", "selector"),
                f"selector also matches worker pods of {workers[0].name} (they serve nothing); "
                f'add {LWS_WORKER_INDEX}: "0"',
            )
        elif not leaders and (lwss or s.is_folder):
            s.add(svc, ("spec", "selector"), "selector matches no LeaderWorkerSet leader pods")
        if leaders:
            lead = leaders[0]
            tmpl = lead.get("spec", "leaderWorkerTemplate", "leaderTemplate", "spec") or {}
            container = (tmpl.get("containers") or [{}])[0]
            cports = container.get("ports") or []
            names = {p.get("name") for p in cports} | {p.get("containerPort") for p in cports}
            for pi, port in enumerate(svc.get("spec", "ports") or []):
                target = port.get("targetPort", port.get("port"))
                if target not in names:
                    s.add(
                        svc,
                        ("spec", "ports", pi, "targetPort"),
                        f"targetPort {target!r} is not a port of {lead.name}'s leader",
                    )
        if svc.get("spec", "type") == "LoadBalancer":
            _check_nlb(s, svc)
            if leaders:
                _check_deregistration(s, svc, leaders[0])


def _check_deregistration(s: _Set, svc: LoadedObject, lws: LoadedObject) -> None:
    # A deregistering NLB target keeps its open connections for the deregistration delay
    # (default 300 s, AWS ELB target group attributes); past the pod's grace period they
    # would end in resets instead of vLLM's drain.
    key = _LB + "target-group-attributes"
    attrs = str((svc.get("metadata", "annotations") or {}).get(key, ""))
    found = re.search(r"deregistration_delay\.timeout_seconds=(\d+)", attrs)
    delay_s = int(found.group(1)) if found else 300
    tmpl = lws.get("spec", "leaderWorkerTemplate", "leaderTemplate", "spec") or {}
    grace_s = int(tmpl.get("terminationGracePeriodSeconds", 30))
    if delay_s > grace_s:
        s.add(
            svc,
            ("metadata", "annotations", key),
            f"NLB deregistration delay {delay_s}s{'' if found else ' (default)'} exceeds "
            f"{lws.name}'s terminationGracePeriodSeconds {grace_s}s; set "
            f"deregistration_delay.timeout_seconds <= {grace_s}",
        )


def _check_nlb(s: _Set, svc: LoadedObject) -> None:
    ann = {str(k): str(v) for k, v in (svc.get("metadata", "annotations") or {}).items()}
    base = ("metadata", "annotations")
    for key in ann:
        if key.startswith(_LB) and key[len(_LB) :] not in _KNOWN_LB_ANNOTATIONS:
            short = key[len(_LB) :]
            hint = f"; did you mean {_LB}healthcheck-{short}?" if "threshold" in short else ""
            s.add(svc, (*base, key), f"not an AWS Load Balancer Controller annotation{hint}")
    expect = {
        "type": "external",
        "nlb-target-type": "ip",
        "healthcheck-protocol": "http",
        "healthcheck-path": "/health",
    }
    for short, want in expect.items():
        key = _LB + short
        if ann.get(key, "").lower() != want:
            got = f" (got {ann[key]!r})" if key in ann else ""
            s.add(svc, (*base, key), f"must be {want!r}{got}")
    if _LB + "scheme" not in ann:
        s.add(svc, (*base, _LB + "scheme"), "set the scheme explicitly (internal by default)")
    for short, (lo, hi) in _HC_RANGES.items():
        key = _LB + short
        if key not in ann:
            continue
        value = _int_or_none(ann[key])
        if value is None or not lo <= value <= hi:
            s.add(svc, (*base, key), f"{ann[key]!r} is outside the NLB range {lo}..{hi}")


def _rule_routes(s: _Set) -> None:
    for route in s.of("HTTPRoute"):
        for pi, parent in enumerate(route.get("spec", "parentRefs") or []):
            gw_ns = parent.get("namespace") or route.namespace
            gw = s.named("Gateway", str(parent.get("name")), gw_ns)
            if gw is None:
                if s.missing("Gateway", str(parent.get("name")), gw_ns):
                    s.add(
                        route,
                        ("spec", "parentRefs", pi, "name"),
                        f"no Gateway {parent.get('name')!r} in namespace {gw_ns!r} here",
                    )
                continue
            if gw_ns != route.namespace:
                allowed = [
                    ((lst.get("allowedRoutes") or {}).get("namespaces") or {}).get("from", "Same")
                    for lst in gw.get("spec", "listeners") or []
                ]
                if not any(a in ("All", "Selector") for a in allowed):
                    s.add(
                        route,
                        ("spec", "parentRefs", pi, "namespace"),
                        "cross-namespace parentRef needs the listener's allowedRoutes.namespaces"
                        ".from: All|Selector",
                    )
        for ri, rule in enumerate(route.get("spec", "rules") or []):
            _check_route_paths(s, route, ri, rule)
            refs = rule.get("backendRefs") or []
            rpath: FieldPath = ("spec", "rules", ri, "backendRefs")
            if len(refs) > 16:
                s.add(route, rpath, f"{len(refs)} backendRefs; Gateway API allows at most 16")
            total = 0
            for bi, ref in enumerate(refs):
                weight = ref.get("weight", 1)
                if not isinstance(weight, int) or not 0 <= weight <= 1_000_000:
                    s.add(route, (*rpath, bi, "weight"), f"weight {weight!r} not in 0..1000000")
                    continue
                total += weight
                if ref.get("kind", "Service") != "Service":
                    continue
                ns = ref.get("namespace") or route.namespace
                svc = s.named("Service", str(ref.get("name")), ns)
                if svc is None:
                    if s.missing("Service", str(ref.get("name")), ns):
                        s.add(
                            route,
                            (*rpath, bi, "name"),
                            f"no Service {ref.get('name')!r} in namespace {ns!r}: its share of "
                            "requests would get HTTP 500",
                        )
                    continue
                ports = [p.get("port") for p in svc.get("spec", "ports") or []]
                if ref.get("port") not in ports:
                    s.add(
                        route,
                        (*rpath, bi, "port"),
                        f"Service {svc.name} has ports {ports}, not {ref.get('port')!r}",
                    )
            if refs and total == 0:
                s.add(route, rpath, "all weights are 0: the rule sends no traffic anywhere")
            for fi, flt in enumerate(rule.get("filters") or []):
                mod = flt.get("requestHeaderModifier") or {}
                for hi, header in enumerate(mod.get("add") or []):
                    if str(header.get("name", "")).lower().startswith("x-inference"):
                        s.add(
                            route,
                            (
                                "spec",
                                "rules",
                                ri,
                                "filters",
                                fi,
                                "requestHeaderModifier",
                                "add",
                                hi,
                            ),
                            "use 'set', not 'add': add appends to a client-sent value",
                        )


def _check_route_paths(s: _Set, route: LoadedObject, ri: int, rule: dict[str, Any]) -> None:
    matches = rule.get("matches") or [{}]
    for mi, match in enumerate(matches):
        path = (match.get("path") or {}).get("value", "/")
        if not str(path).startswith(_API_KEY_GUARDED):
            s.add(
                route,
                ("spec", "rules", ri, "matches", mi, "path"),
                f"path {path!r} exposes vLLM routes --api-key does not guard (/invocations, "
                "/tokenize, /scale_elastic_ep...); match PathPrefix /v1 only",
            )


def _rule_gateway_policies(s: _Set) -> None:
    for policy in s.of("BackendTrafficPolicy"):
        for ti, ref in enumerate(policy.get("spec", "targetRefs") or []):
            kind, name = str(ref.get("kind")), str(ref.get("name"))
            if s.missing(kind, name, policy.namespace):
                s.add(
                    policy,
                    ("spec", "targetRefs", ti, "name"),
                    f"no {kind} {name!r} in namespace {policy.namespace!r}: the policy applies "
                    "to nothing",
                )
