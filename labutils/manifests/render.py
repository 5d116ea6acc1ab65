"""``labctl render``: the source manifests (written for one zone) -> plain YAML per zone.

The source folder holds ordinary, valid Kubernetes objects for a single *template zone* (the
zone label of ``zone/lws.yaml``). Rendering is structural, not textual templating: the zone
objects are deep-copied once per configured zone with every occurrence of the template zone
replaced, then the lab config (``lab.yaml``, with its workshop profile applied) and the cluster
settings (:mod:`labutils.manifests.settings`) are applied to named fields (replicas, model,
TP/PP, instance type, HPA bounds, route weights, VPC CIDR, monitoring release, AMI...). Every
namespaced object lands in the lab namespace (``--namespace`` overrides it); nothing is
written into another namespace. The output layout is the one in ``docs/contracts.md``;
``participant/`` (a participant's identity and JupyterLab) is rendered only for a participant
namespace.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import yaml

from labutils import catalog
from labutils.config import LabConfig, load_config, manifests_dir
from labutils.errors import ConfigError, ManifestError
from labutils.manifests.loader import LoadedObject, load_objects
from labutils.manifests.rules import GPU, ZONE_LABEL
from labutils.manifests.settings import ClusterSettings, cluster_settings, effective_config

__all__ = ["ALL_ZONES_SERVICE", "PARTICIPANT_DIR", "RENDER_HEADER", "render"]

RENDER_HEADER = (
    "# Rendered by `labctl render` from manifests/{source}: edit the source, not this file.\n"
)
_MAX_BACKEND_REFS = 16
_MAX_WEIGHT = 1_000_000
_SUBDIRS = ("cluster", "zones", "gateway", "monitoring", "optional", "participant")
PARTICIPANT_DIR = "participant"
# The zone-aware failover route's one backend: every zone's group leaders.
ALL_ZONES_SERVICE = "vllm-api"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TEMPLATE_CIDR = "10.0.0.0/16"
_TEMPLATE_GATEWAY_NS = "envoy-gateway-system"
_TEMPLATE_MONITORING_NS = "monitoring"


def _replace_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_strings(v, old, new) for v in value]
    if isinstance(value, dict):
        return {
            _replace_strings(k, old, new): _replace_strings(v, old, new) for k, v in value.items()
        }
    return value


def _set_flag(tokens: list[Any], flag: str, value: str) -> None:
    for i, tok in enumerate(tokens):
        if str(tok) == flag and i + 1 < len(tokens):
            tokens[i + 1] = value
            return
        if str(tok).startswith(flag + "="):
            tokens[i] = f"{flag}={value}"
            return
    tokens.extend([flag, value])


def _check_config(cfg: LabConfig) -> catalog.InstanceType:
    node = catalog.instance_type(cfg.instance_type)
    if cfg.tensor_parallel_size < 1 or cfg.pipeline_parallel_size < 1:
        raise ConfigError("lab.yaml: tensor_parallel_size and pipeline_parallel_size must be >= 1")
    if cfg.tensor_parallel_size > node.gpus:
        raise ConfigError(
            f"lab.yaml: tensor_parallel_size={cfg.tensor_parallel_size} but {node.name} has "
            f"{node.gpus} GPUs; TP runs inside one node, so use TP <= {node.gpus} and raise "
            "pipeline_parallel_size instead"
        )
    try:
        spec = catalog.model(cfg.model)
    except ConfigError:
        spec = None  # a model the catalogue does not know: the lab trusts the user
    if spec is not None and not spec.chat:
        raise ConfigError(
            f"lab.yaml: model {cfg.model} has no chat template; pick an instruct model"
        )
    if spec is not None and spec.heads % cfg.tensor_parallel_size:
        divisors = [d for d in range(1, node.gpus + 1) if spec.heads % d == 0]
        raise ConfigError(
            f"lab.yaml: tensor_parallel_size={cfg.tensor_parallel_size} does not divide the "
            f"{spec.heads} attention heads of {cfg.model} (vLLM refuses it); use one of {divisors}"
        )
    if not 1 <= len(cfg.zones) <= _MAX_BACKEND_REFS:
        raise ConfigError(f"lab.yaml: 1..{_MAX_BACKEND_REFS} zones (HTTPRoute backendRefs limit)")
    if len(set(cfg.zones)) != len(cfg.zones):
        raise ConfigError(f"lab.yaml: zones repeat a zone: {list(cfg.zones)}")
    unknown = sorted(set(cfg.route_weights) - set(cfg.zones))
    if unknown:
        raise ConfigError(
            f"lab.yaml: route_weights name zone(s) {unknown} that are not in zones "
            f"{list(cfg.zones)}; fix the zone name or add it to zones"
        )
    for zone in cfg.zones:
        if not 0 <= cfg.weight(zone) <= _MAX_WEIGHT:
            raise ConfigError(f"lab.yaml: route_weights[{zone}] must be in 0..{_MAX_WEIGHT}")
    if sum(cfg.weight(z) for z in cfg.zones) == 0:
        raise ConfigError("lab.yaml: route_weights are all 0; at least one zone needs traffic")
    if not cfg.min_replicas <= cfg.replicas <= cfg.max_replicas or cfg.max_replicas < 1:
        raise ConfigError(
            "lab.yaml: need min_replicas <= replicas <= max_replicas and max_replicas >= 1, got "
            f"{cfg.min_replicas} / {cfg.replicas} / {cfg.max_replicas}"
        )
    return node


def _size_pod(container: dict[str, Any], cfg: LabConfig, node: catalog.InstanceType) -> None:
    # One pod per node: leave ~15 % of the node to kubelet, system daemons and /dev/shm.
    resources = container.setdefault("resources", {})
    requests = resources.setdefault("requests", {})
    limits = resources.setdefault("limits", {})
    requests["cpu"] = str(math.floor(node.vcpus * 0.8))
    limits["cpu"] = str(math.floor(node.vcpus * 0.9))
    requests["memory"] = f"{math.floor(node.memory_gib * 0.8)}Gi"
    limits["memory"] = f"{math.floor(node.memory_gib * 0.9)}Gi"
    requests[GPU] = limits[GPU] = str(cfg.tensor_parallel_size)


def _flag_value(tokens: list[Any], flag: str) -> str | None:
    for i, tok in enumerate(tokens):
        if str(tok) == flag and i + 1 < len(tokens):
            return str(tokens[i + 1])
        if str(tok).startswith(flag + "="):
            return str(tok).split("=", 1)[1]
    return None


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    for env in container.get("env") or []:
        if env.get("name") == name and "value" in env:
            env["value"] = value


def _apply_lws(
    data: dict[str, Any], cfg: LabConfig, node: catalog.InstanceType, st: ClusterSettings
) -> None:
    spec = data["spec"]
    spec["replicas"] = cfg.replicas
    lwt = spec["leaderWorkerTemplate"]
    lwt["size"] = cfg.pipeline_parallel_size
    for key in ("leaderTemplate", "workerTemplate"):
        pod = (lwt.get(key) or {}).get("spec")
        if not pod:
            continue
        pod.setdefault("nodeSelector", {})["node.kubernetes.io/instance-type"] = cfg.instance_type
        container = pod["containers"][0]
        args = container.setdefault("args", [])
        if args and not str(args[0]).startswith("-"):
            args[0] = cfg.model
        else:
            args.insert(0, cfg.model)
        _set_flag(args, "--served-model-name", cfg.served_model_name)
        _set_flag(args, "--tensor-parallel-size", str(cfg.tensor_parallel_size))
        _set_flag(args, "--pipeline-parallel-size", str(cfg.pipeline_parallel_size))
        if _flag_value(args, "--distributed-timeout-seconds") is not None:
            _set_flag(args, "--distributed-timeout-seconds", str(st.startup_timeout_s))
        _set_env(container, "VLLM_ENGINE_READY_TIMEOUT_S", str(st.startup_timeout_s))
        _size_pod(container, cfg, node)
        startup = container.get("startupProbe")
        if startup:
            period_s = int(startup.get("periodSeconds", 10))
            startup["failureThreshold"] = math.ceil(st.startup_timeout_s / period_s)
        pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep")
        if pre_stop is not None:
            pre_stop["seconds"] = st.prestop_sleep_s
            drain_s = int(_flag_value(args, "--shutdown-timeout") or 0)
            # SIGTERM comes after preStop; vLLM then drains for --shutdown-timeout seconds.
            needed_s = st.prestop_sleep_s + drain_s + 10
            pod["terminationGracePeriodSeconds"] = max(
                int(pod.get("terminationGracePeriodSeconds", 30)), needed_s
            )


def _apply_zone_object(
    obj: dict[str, Any], cfg: LabConfig, node: catalog.InstanceType, st: ClusterSettings
) -> None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "LeaderWorkerSet":
        _apply_lws(obj, cfg, node, st)
    elif kind == "Job":
        for container in spec["template"]["spec"].get("containers") or []:
            args = container.get("args") or []
            if args and not str(args[0]).startswith("-"):
                args[0] = cfg.model
    elif kind == "Service" and spec.get("type") == "LoadBalancer":
        notes = obj.setdefault("metadata", {}).setdefault("annotations", {})
        key = "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"
        if key in notes:
            notes[key] = re.sub(
                r"deregistration_delay\.timeout_seconds=\d+",
                f"deregistration_delay.timeout_seconds={st.nlb_deregistration_delay_s}",
                notes[key],
            )
        if not st.zone_load_balancers:
            spec["type"] = "ClusterIP"
    elif kind == "HorizontalPodAutoscaler":
        spec["minReplicas"], spec["maxReplicas"] = cfg.min_replicas, cfg.max_replicas
    elif kind == "ScaledObject":
        spec["minReplicaCount"], spec["maxReplicaCount"] = cfg.min_replicas, cfg.max_replicas
    elif kind == "PersistentVolumeClaim":
        spec["storageClassName"] = cfg.model_storage_class
    elif kind == "NodePool":
        for req in spec["template"]["spec"].get("requirements", []):
            if req.get("key") == "node.kubernetes.io/instance-type":
                req["values"] = [cfg.instance_type]
        # Karpenter counts the capacity of the nodes it launched: whole nodes (one pod each,
        # PP of them per group), for the shared fleet once or every participant's small fleet.
        fleets = st.participant_count if st.profile == "per-participant" else 1
        node_gpus = cfg.max_replicas * cfg.pipeline_parallel_size * node.gpus
        spec.setdefault("limits", {})[GPU] = str(fleets * node_gpus)
    elif kind == "EC2NodeClass":
        spec["role"] = f"KarpenterNodeRole-{cfg.cluster_name}"
        for term in spec.get("amiSelectorTerms", []):
            if "alias" in term:
                term["alias"] = st.karpenter_ami_alias
        for key in ("subnetSelectorTerms", "securityGroupSelectorTerms"):
            for term in spec.get(key, []):
                if "karpenter.sh/discovery" in term.get("tags", {}):
                    term["tags"]["karpenter.sh/discovery"] = cfg.cluster_name


def _template_zone(objects: list[LoadedObject]) -> str:
    zones = {o.labels.get(ZONE_LABEL) for o in objects if o.kind == "LeaderWorkerSet"}
    zones.discard(None)
    if len(zones) != 1:
        where = objects[0].file if objects else "zone/"
        raise ManifestError(
            f"{where}: the source zone/ folder needs exactly one LeaderWorkerSet labelled "
            f"{ZONE_LABEL} (the template zone), found {sorted(z for z in zones if z)}"
        )
    return str(next(iter(zones)))


def _set_namespace(obj: dict[str, Any], source_ns: str | None, cfg: LabConfig) -> None:
    meta = obj.setdefault("metadata", {})
    if obj.get("kind") == "Namespace" and meta.get("name") == source_ns:
        meta["name"] = cfg.namespace
    elif source_ns and meta.get("namespace") == source_ns:
        meta["namespace"] = cfg.namespace


def _expand_routes(obj: dict[str, Any], template_zone: str, cfg: LabConfig) -> None:
    for rule in (obj.get("spec") or {}).get("rules", []):
        refs = rule.get("backendRefs") or []
        template = [r for r in refs if template_zone in str(r.get("name", ""))]
        if not template:
            continue
        others = [r for r in refs if r not in template]
        expanded = []
        for zone in cfg.zones:
            ref = _replace_strings(copy.deepcopy(template[0]), template_zone, zone)
            ref["weight"] = cfg.weight(zone)
            expanded.append(ref)
        rule["backendRefs"] = expanded + others


def _dump(path: Path, docs: list[dict[str, Any]], source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False, width=100) for d in docs)
    path.write_text(RENDER_HEADER.format(source=source) + body)
    return path


def _clean(out: Path) -> None:
    # Remove only files this command wrote before (they start with the header), so a stale
    # zone does not linger and nothing else in the folder is touched.
    marker = RENDER_HEADER.split("{")[0]
    for sub in _SUBDIRS:
        for file in (out / sub).rglob("*.yaml") if (out / sub).is_dir() else ():
            if file.read_text().startswith(marker):
                file.unlink()


def render(
    config: LabConfig | None = None,
    out_dir: str | Path = "rendered",
    source: str | Path | None = None,
    *,
    namespace: str | None = None,
    participant: bool = False,
) -> list[Path]:
    """Render the source manifests for every zone of ``config`` into ``out_dir``.

    Args:
        config: the lab config (default: ``manifests/lab.yaml``); its ``profile`` is applied.
        out_dir: output folder; files a previous render wrote there are replaced.
        source: the source manifests folder (default: ``manifests/`` or ``$LAB_MANIFESTS``).
        namespace: put every namespaced object here (default: ``namespace`` of the config).
        participant: also render ``participant/`` (the participant's ServiceAccount, Role,
            JupyterLab and their ``lab.yaml``) for a participant namespace.

    Returns:
        The files written, in the layout of ``docs/contracts.md``.

    Raises:
        ConfigError: the config is inconsistent (TP larger than a node, bad weights...).
        ManifestError: a source file is missing or not valid YAML.
    """
    src = Path(source) if source else manifests_dir()
    cfg = effective_config(config or load_config(src / "lab.yaml"))
    if namespace is not None:
        if not _DNS1123_LABEL.match(namespace):
            raise ConfigError(
                f"--namespace {namespace!r} is not a namespace name (lowercase letters, digits, "
                "'-'; at most 63 characters)"
            )
        cfg = dataclasses.replace(cfg, namespace=namespace)
    settings = cluster_settings(cfg)
    node = _check_config(cfg)
    out = Path(out_dir)
    by_file: dict[Path, list[LoadedObject]] = {}
    for obj in load_objects(src):
        by_file.setdefault(obj.file, []).append(obj)
    zone_objects = [o for f, objs in by_file.items() if f.parent.name == "zone" for o in objs]
    if not zone_objects:
        raise ManifestError(f"{src}/zone: no zone objects found; is {src} the manifests folder?")
    template_zone = _template_zone(zone_objects)
    ns_objects = [
        o for o in by_file.get(src / "cluster" / "namespace.yaml", []) if o.kind == "Namespace"
    ]
    source_ns = ns_objects[0].name if ns_objects else cfg.namespace
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder (it is created if missing)")
    _clean(out)
    written: list[Path] = []
    for file, objs in sorted(by_file.items()):
        rel = file.relative_to(src)
        if rel.parts[0] == PARTICIPANT_DIR and not participant:
            continue
        per_zone = rel.parts[0] in ("zone", "optional")
        for zone in cfg.zones if per_zone else (None,):
            docs = []
            for obj in objs:
                data = copy.deepcopy(obj.data)
                if zone is not None:
                    data = _replace_strings(data, template_zone, zone)
                    _apply_zone_object(data, cfg, node, settings)
                elif data.get("kind") == "HTTPRoute":
                    _expand_routes(data, template_zone, cfg)
                _apply_cluster_object(data, cfg, settings)
                if source_ns:
                    data = _replace_ns_strings(data, source_ns, cfg.namespace)
                _set_namespace(data, source_ns, cfg)
                docs.append(data)
            if rel.parts[0] == "zone":
                target = out / "zones" / str(zone) / rel.name
            elif zone is not None:
                target = out / rel.parent / f"{rel.stem}-{zone}{rel.suffix}"
            else:
                target = out / rel
            written.append(_dump(target, docs, str(rel)))
    if settings.gateway_failover == "zone-aware":
        written.extend(_zone_aware_gateway(out, cfg, settings))
    if participant:
        written.append(_participant_config(out, cfg, src))
    return written


def _replace_ns_strings(data: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    # Inside strings only PromQL label matchers name the namespace (KEDA queries); RoleBinding
    # subjects name it in a field.
    if old == new:
        return data
    result: dict[str, Any] = _replace_strings(data, f'namespace="{old}"', f'namespace="{new}"')
    for subject in result.get("subjects") or []:
        if subject.get("namespace") == old:
            subject["namespace"] = new
    return result


def _namespace_refs(obj: dict[str, Any], st: ClusterSettings) -> None:
    # NetworkPolicy peers name the gateway and monitoring namespaces and the VPC CIDR.
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            labels = (node.get("namespaceSelector") or {}).get("matchLabels") or {}
            name = labels.get("kubernetes.io/metadata.name")
            if name == _TEMPLATE_GATEWAY_NS:
                labels["kubernetes.io/metadata.name"] = st.gateway_namespace
            elif name == _TEMPLATE_MONITORING_NS:
                labels["kubernetes.io/metadata.name"] = st.monitoring_namespace
            block = node.get("ipBlock")
            if isinstance(block, dict) and block.get("cidr") == _TEMPLATE_CIDR:
                block["cidr"] = st.vpc_cidr
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(obj.get("spec"))


def _apply_cluster_object(obj: dict[str, Any], cfg: LabConfig, st: ClusterSettings) -> None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    meta = obj.setdefault("metadata", {})
    if kind == "ResourceQuota":
        gpus = len(cfg.zones) * cfg.max_replicas * cfg.tensor_parallel_size
        gpus *= cfg.pipeline_parallel_size
        hard = spec.setdefault("hard", {})
        hard[f"requests.{GPU}"] = str(gpus)
        if "services.loadbalancers" in hard:
            hard["services.loadbalancers"] = str(len(cfg.zones) if st.zone_load_balancers else 0)
    elif kind == "Gateway":
        spec["gatewayClassName"] = cfg.gateway_class_name
    elif kind == "NetworkPolicy":
        _namespace_refs(obj, st)
    elif kind == "PodMonitor" and "release" in (meta.get("labels") or {}):
        meta["labels"]["release"] = st.monitoring_release
    elif kind == "ScaledObject":
        for trigger in spec.get("triggers") or []:
            if trigger.get("type") == "prometheus":
                trigger.setdefault("metadata", {})["serverAddress"] = st.prometheus_url
    elif kind == "Deployment" and meta.get("name") == "jupyterlab":
        for container in spec["template"]["spec"].get("containers") or []:
            container["image"] = st.jupyter_image


def _zone_aware_gateway(out: Path, cfg: LabConfig, st: ClusterSettings) -> list[Path]:
    """``gateway.failover: zone-aware``: one backend (every zone's leaders) with zone weights.

    Envoy Gateway then builds one cluster whose localities are the zones, weighted by
    ``loadBalancer.zoneAware.weightedZones`` (Envoy Gateway v1.9 BackendTrafficPolicy), and
    Envoy's locality-weighted balancing gives a zone without healthy endpoints no traffic.
    """
    route_file = out / "gateway" / "httproute.yaml"
    policy_file = out / "gateway" / "backendtrafficpolicy.yaml"
    routes = [d for d in yaml.safe_load_all(route_file.read_text()) if d]
    policies = [d for d in yaml.safe_load_all(policy_file.read_text()) if d]
    for route in routes:
        for rule in route["spec"].get("rules") or []:
            refs = rule.get("backendRefs") or []
            if refs:
                rule["backendRefs"] = [
                    {"group": "", "kind": "Service", "name": ALL_ZONES_SERVICE, "port": 80}
                ]
    for policy in policies:
        policy["spec"]["loadBalancer"] = {
            "type": "LeastRequest",
            "zoneAware": {
                "weightedZones": [{"zone": z, "weight": cfg.weight(z)} for z in cfg.zones]
            },
        }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": ALL_ZONES_SERVICE,
            "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/part-of": PART},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {
                "app.kubernetes.io/name": "vllm",
                "leaderworkerset.sigs.k8s.io/worker-index": "0",
            },
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [
        _dump(route_file, routes, "gateway/httproute.yaml"),
        _dump(policy_file, policies, "gateway/backendtrafficpolicy.yaml"),
        _dump(out / "gateway" / "service-all-zones.yaml", [service], "gateway (zone-aware)"),
    ]


def _participant_config(out: Path, cfg: LabConfig, src: Path) -> Path:
    """The participant's ``lab.yaml`` (their namespace) as a ConfigMap for their JupyterLab."""
    text = (src / "lab.yaml").read_text()
    text = re.sub(r"(?m)^namespace:.*$", f"namespace: {cfg.namespace}", text, count=1)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "lab-config",
            "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/part-of": PART},
        },
        "data": {"lab.yaml": text},
    }
    return _dump(out / PARTICIPANT_DIR / "lab-config.yaml", [config_map], "lab.yaml")


PART = "vllm-lws-lab"
