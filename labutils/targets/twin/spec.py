"""What the twin runs, read from the rendered manifests (the same objects the cluster gets).

:func:`twin_spec_from_objects` turns parsed Kubernetes objects (LeaderWorkerSet, Service,
HTTPRoute, HPA, prometheus-adapter rules) into a :class:`TwinSpec`; nothing about the
deployment is configured twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labutils import catalog
from labutils.errors import ConfigError, ManifestError
from labutils.kube.hpa import HpaSpec, hpa_spec_from_manifest
from labutils.kube.labels import INSTANCE_TYPE_LABELS, ZONE_LABEL
from labutils.metrics.adapter import AdapterRule, adapter_rules_from_objects
from labutils.metrics.addons import prometheus_rules
from labutils.vllm_args import VllmServeArgs, parse_vllm_serve

__all__ = [
    "ZONE_LABEL",
    "HeaderModifier",
    "HealthCheck",
    "TwinSpec",
    "ZoneSpec",
    "load_twin_spec",
    "manifests_digest",
    "twin_spec_from_objects",
]

_HC = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-"
_INSTANCE_TYPE_KEYS = INSTANCE_TYPE_LABELS


@dataclass(frozen=True)
class HealthCheck:
    """NLB target health check from the Service annotations (AWS LB Controller defaults)."""

    protocol: str = "TCP"
    path: str = "/"
    interval_s: float = 10.0
    timeout_s: float = 10.0
    healthy_threshold: int = 3
    unhealthy_threshold: int = 3
    success_codes: str = "200-399"


@dataclass(frozen=True)
class HeaderModifier:
    """The HTTPRoute's ``RequestHeaderModifier`` filter."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZoneSpec:
    """One zone's LeaderWorkerSet and the Service in front of its leaders."""

    zone: str
    lws: str
    replicas: int
    size: int  # pods per group (leader + workers)
    engine: VllmServeArgs
    gpu: str
    instance_type: str
    service: str
    health: HealthCheck
    weight: int = 1  # HTTPRoute backendRef weight (0 = no traffic)
    request_headers: HeaderModifier = field(default_factory=HeaderModifier)  # backendRef filter
    response_headers: HeaderModifier = field(default_factory=HeaderModifier)
    # the leader pod as Kubernetes service discovery sees it (for the twin's Prometheus)
    pod_labels: tuple[tuple[str, str], ...] = ()  # leaderTemplate.metadata.labels
    container: str = "vllm"  # the leader's first container
    ports: tuple[tuple[str, int, str], ...] = ()  # its (name, containerPort, protocol)


@dataclass(frozen=True)
class TwinSpec:
    """Everything the twin needs: zones, the route's filter, HPAs, and adapter metric names."""

    namespace: str
    zones: tuple[ZoneSpec, ...]
    headers: HeaderModifier = field(default_factory=HeaderModifier)
    response_headers: HeaderModifier = field(default_factory=HeaderModifier)
    path_prefixes: tuple[str, ...] = ()  # the rule's PathPrefix matches (empty: everything)
    request_timeout_s: float | None = None  # the rule's timeouts.request (None: no limit)
    hpas: tuple[HpaSpec, ...] = ()
    adapter_series: dict[str, str] = field(default_factory=dict)  # HPA metric -> vLLM series
    adapter_rules: tuple[AdapterRule, ...] = ()  # prometheus-adapter's rules, as it runs them
    pod_monitors: tuple[dict[str, Any], ...] = ()  # what the twin's Prometheus scrapes
    prometheus_rules: tuple[dict[str, Any], ...] = ()  # PrometheusRule objects it evaluates

    def zone(self, name: str) -> ZoneSpec:
        """The zone called ``name`` (raises with the valid choices)."""
        for z in self.zones:
            if z.zone == name:
                return z
        raise ConfigError(f"unknown zone {name!r}; choose one of: {self.zone_names}")

    @property
    def zone_names(self) -> str:
        """Zone names joined with commas (for messages)."""
        return ", ".join(z.zone for z in self.zones)

    def hpa_for(self, lws: str) -> HpaSpec | None:
        """The HPA whose scale target is the LWS ``lws``, if any."""
        return next((h for h in self.hpas if h.target_name == lws), None)

    def series_for(self, metric: str) -> str:
        """The vLLM series an HPA metric reads (adapter rule, else ``vllm_x`` -> ``vllm:x``)."""
        if metric in self.adapter_series:
            return self.adapter_series[metric]
        if metric.startswith("vllm_"):
            return "vllm:" + metric[len("vllm_") :]
        return metric


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def _where(obj: Mapping[str, Any]) -> str:
    source = obj.get("__source__")
    name = f"{obj.get('kind')}/{_meta(obj).get('name')}"
    return f"{source}: {name}" if source else name


def _leader_container(lws: Mapping[str, Any]) -> Mapping[str, Any]:
    template = (lws.get("spec") or {}).get("leaderWorkerTemplate") or {}
    pod = template.get("leaderTemplate") or template.get("workerTemplate") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        raise ConfigError(f"{_where(lws)}: leader template has no containers")
    return containers[0]


_Ports = tuple[tuple[str, int, str], ...]


def _leader_pod(lws: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], str, _Ports]:
    # What service discovery sees of a leader pod: its template's labels, first container, ports.
    template = (lws.get("spec") or {}).get("leaderWorkerTemplate") or {}
    pod = template.get("leaderTemplate") or template.get("workerTemplate") or {}
    raw_labels = (pod.get("metadata") or {}).get("labels") or {}
    labels = tuple(sorted((str(k), str(v)) for k, v in raw_labels.items()))
    container = _leader_container(lws)
    ports = tuple(
        (str(p.get("name", "")), int(p["containerPort"]), str(p.get("protocol", "TCP")))
        for p in container.get("ports") or []
        if p.get("containerPort")
    )
    return labels, str(container.get("name", "")), ports


def _instance_type(lws: Mapping[str, Any], default: str) -> str:
    template = (lws.get("spec") or {}).get("leaderWorkerTemplate") or {}
    pod = template.get("leaderTemplate") or template.get("workerTemplate") or {}
    pod_spec = pod.get("spec") or {}
    selector = pod_spec.get("nodeSelector") or {}
    for key in _INSTANCE_TYPE_KEYS:
        if key in selector:
            return str(selector[key])
    affinity = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") in _INSTANCE_TYPE_KEYS and expr.get("values"):
                return str(expr["values"][0])
    return default


def _health(service: Mapping[str, Any] | None) -> HealthCheck:
    if service is None:
        return HealthCheck()
    notes = _meta(service).get("annotations") or {}
    base = HealthCheck()

    def num(key: str, default: float) -> float:
        raw = notes.get(_HC + key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(
                f"{_where(service)}: annotation {_HC + key}={raw!r} must be a number"
            ) from None

    return HealthCheck(
        protocol=str(notes.get(_HC + "protocol", base.protocol)).upper(),
        path=str(notes.get(_HC + "path", base.path)),
        interval_s=num("interval", base.interval_s),
        timeout_s=num("timeout", base.timeout_s),
        healthy_threshold=int(num("healthy-threshold", base.healthy_threshold)),
        unhealthy_threshold=int(num("unhealthy-threshold", base.unhealthy_threshold)),
        success_codes=str(notes.get(_HC + "success-codes", base.success_codes)),
    )


def _modifier(filters: Any, kind: str) -> HeaderModifier:
    key = kind[0].lower() + kind[1:]
    for flt in filters or []:
        if flt.get("type") == kind:
            mod = flt.get(key) or {}
            return HeaderModifier(
                set=tuple((h["name"], str(h["value"])) for h in mod.get("set") or []),
                add=tuple((h["name"], str(h["value"])) for h in mod.get("add") or []),
                remove=tuple(str(n) for n in mod.get("remove") or []),
            )
    return HeaderModifier()


def _first_rule(route: Mapping[str, Any] | None) -> Mapping[str, Any]:
    rules = ((route or {}).get("spec") or {}).get("rules") or [{}]
    return rules[0]


def _backend_filters(route: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        str(ref.get("name")): ref.get("filters") or []
        for ref in _first_rule(route).get("backendRefs") or []
    }


def _duration_s(value: Any, where: str) -> float | None:
    # Gateway API Duration: e.g. "600s", "1m", "1h30m", "500ms"; "0s" disables the timeout.
    if value is None:
        return None
    parts = re.findall(r"(\d+)(ms|h|m|s)", str(value))
    if not parts or "".join(n + u for n, u in parts) != str(value):
        raise ConfigError(f"{where}: timeouts duration {value!r}; expected e.g. 600s, 1m, 500ms")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total = sum(int(n) * scale[u] for n, u in parts)
    return total or None


def _path_prefixes(route: Mapping[str, Any] | None) -> tuple[str, ...]:
    out = []
    for match in _first_rule(route).get("matches") or []:
        path = match.get("path") or {}
        if path.get("type", "PathPrefix") == "PathPrefix" and path.get("value"):
            out.append(str(path["value"]))
    return tuple(out)


def _route_weights(route: Mapping[str, Any] | None) -> dict[str, int]:
    if route is None:
        return {}
    weights: dict[str, int] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            weight = int(ref.get("weight", 1))
            if not 0 <= weight <= 1_000_000:
                raise ConfigError(f"{_where(route)}: backendRef weight {weight} not in 0..1000000")
            weights[str(ref.get("name"))] = weight
    return weights


def _adapter_series(objects: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    # prometheus-adapter rules: seriesQuery names the series, name.matches/as renames it.
    out: dict[str, str] = {}
    for obj in objects:
        if obj.get("kind") != "ConfigMap" or "adapter" not in str(_meta(obj).get("name", "")):
            continue
        for text in (obj.get("data") or {}).values():
            try:
                config = yaml.safe_load(text) or {}
            except yaml.YAMLError:
                continue
            for rule in config.get("rules") or [] if isinstance(config, dict) else []:
                match = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", str(rule.get("seriesQuery", "")))
                if not match:
                    continue
                series = match.group(1)
                name = rule.get("name") or {}
                pattern = name.get("matches") or "^(.*)$"
                alias = name.get("as") or "${1}"
                exposed = re.sub(pattern, alias.replace("${", "\\g<").replace("}", ">"), series)
                out[exposed] = series
    return out


def twin_spec_from_objects(
    objects: Iterable[Mapping[str, Any]], *, default_instance_type: str = "g5.12xlarge"
) -> TwinSpec:
    """Build the twin's spec from rendered Kubernetes objects.

    Args:
        objects: parsed objects; an optional ``__source__`` key (``file:line``) is used in
            error messages.
        default_instance_type: when an LWS pins no instance type.

    Raises:
        ConfigError: no LeaderWorkerSet, an LWS without zone label, a bad engine command.
    """
    objs = list(objects)
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for obj in objs:
        by_kind.setdefault(str(obj.get("kind")), []).append(obj)
    lwss = by_kind.get("LeaderWorkerSet", [])
    if not lwss:
        raise ConfigError("no LeaderWorkerSet among the manifests; run 'labctl render' first")
    services = {str(_meta(s).get("name")): s for s in by_kind.get("Service", [])}
    routes = by_kind.get("HTTPRoute", [])
    route = routes[0] if routes else None
    weights = _route_weights(route)
    ref_filters = _backend_filters(route)
    zones = []
    namespace = str(_meta(lwss[0]).get("namespace") or "default")
    for lws in lwss:
        name = str(_meta(lws).get("name"))
        zone = _labels(lws).get(ZONE_LABEL)
        if not zone:
            raise ConfigError(f"{_where(lws)}: missing label {ZONE_LABEL}")
        container = _leader_container(lws)
        command = [str(c) for c in (container.get("command") or [])]
        command += [str(a) for a in (container.get("args") or [])]
        try:
            engine = parse_vllm_serve(command)
        except ConfigError as exc:
            raise ConfigError(f"{_where(lws)}: {exc}") from None
        itype = _instance_type(lws, default_instance_type)
        gpu = catalog.instance_type(itype).gpu
        zone_services = [s for s in services.values() if _labels(s).get(ZONE_LABEL) == zone]
        service = services.get(f"{name}-api") or (zone_services[0] if zone_services else None)
        service_name = str(_meta(service).get("name")) if service else f"{name}-api"
        spec = lws.get("spec") or {}
        template = spec.get("leaderWorkerTemplate") or {}
        pod_labels, container_name, ports = _leader_pod(lws)
        zones.append(
            ZoneSpec(
                zone=zone,
                lws=name,
                replicas=int(spec.get("replicas", 1)),
                size=int(template.get("size", 1)),
                engine=engine,
                gpu=gpu,
                instance_type=itype,
                service=service_name,
                health=_health(service),
                weight=weights.get(service_name, 1 if route is None else 0),
                request_headers=_modifier(ref_filters.get(service_name), "RequestHeaderModifier"),
                response_headers=_modifier(ref_filters.get(service_name), "ResponseHeaderModifier"),
                pod_labels=pod_labels,
                container=container_name,
                ports=ports,
            )
        )
    hpas = tuple(
        hpa_spec_from_manifest(h, _where(h)) for h in by_kind.get("HorizontalPodAutoscaler", [])
    )
    return TwinSpec(
        namespace=namespace,
        zones=tuple(sorted(zones, key=lambda z: z.zone)),
        headers=_modifier(_first_rule(route).get("filters"), "RequestHeaderModifier"),
        response_headers=_modifier(_first_rule(route).get("filters"), "ResponseHeaderModifier"),
        path_prefixes=_path_prefixes(route),
        request_timeout_s=_duration_s(
            (_first_rule(route).get("timeouts") or {}).get("request"),
            _where(route) if route else "HTTPRoute",
        ),
        hpas=hpas,
        adapter_series=_adapter_series(objs),
        adapter_rules=adapter_rules_from_objects(objs),
        pod_monitors=tuple(_plain(o) for o in by_kind.get("PodMonitor", [])),
        # The lab's alerting rules ship with the cluster add-ons (labutils/data/monitoring/)
        # until the manifests carry a PrometheusRule; rendered ones take precedence.
        prometheus_rules=tuple(_plain(o) for o in by_kind.get("PrometheusRule", []))
        or tuple(_plain(o) for o in prometheus_rules()),
    )


def _plain(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source__"}


def _yaml_files(root: Path) -> list[Path]:
    # KEDA objects under optional/ are never applied together with the HPAs.
    return [p for p in sorted(root.rglob("*.yaml")) if "optional" not in p.relative_to(root).parts]


def manifests_digest(rendered_dir: str | Path) -> str:
    """SHA-256 over the rendered YAML files (names and contents) the twin reads."""
    root = Path(rendered_dir)
    digest = hashlib.sha256()
    for path in _yaml_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_twin_spec(rendered_dir: str | Path) -> TwinSpec:
    """Read every ``*.yaml`` under ``rendered_dir`` (skipping ``optional/``) into a spec.

    Uses ``labutils.manifests.load_objects`` when that module is present.

    Raises:
        ManifestError: the folder is missing or a file is not YAML.
    """
    root = Path(rendered_dir)
    if not root.is_dir():
        raise ManifestError(f"{root}: rendered manifests folder not found; run 'labctl render'")
    try:  # the manifests module's loader gives file:line for error messages
        from labutils.manifests import load_objects

        loaded = load_objects(root)
        return twin_spec_from_objects(
            {**o.data, "__source__": f"{o.file}:{o.line}"}
            for o in loaded
            if "optional" not in Path(o.file).resolve().relative_to(root.resolve()).parts
        )
    except ImportError:
        pass
    objects: list[dict[str, Any]] = []
    for path in _yaml_files(root):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML ({exc})") from None
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind"):
                objects.append({**doc, "__source__": str(path)})
    return twin_spec_from_objects(objects)
