"""The lab's cross-object rules: what makes these manifests *this* lab, correct and current.

Each rule reads the loaded objects (with file:line) and reports :class:`Problem` findings. The
facts behind them are in ``../shared/reference/seed-corrections.md`` and
``kubernetes-semantics.md`` (LWS v0.10 labels and env, AWS Load Balancer Controller
annotations, NLB health-check ranges, Gateway API limits, HPA semantics).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from labutils import catalog
from labutils.errors import ConfigError
from labutils.manifests.loader import FieldPath, LoadedObject, Problem
from labutils.vllm_args import VllmServeArgs, parse_vllm_serve

__all__ = ["PART_OF", "ZONE_LABEL", "check_rules"]

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


# --- labels and zones -------------------------------------------------------------------------


def _rule_labels(s: _Set) -> None:
    for obj in s.everything:
        if obj.labels.get(PART_OF) != PART_OF_VALUE:
            s.add(
                obj,
                ("metadata", "labels", PART_OF),
                f"label {PART_OF}: {PART_OF_VALUE} is missing (labctl reset finds objects by it)",
            )
        zone_dir = _zone_dir(obj)
        if (obj.kind in _ZONE_KINDS or zone_dir) and ZONE_LABEL not in obj.labels:
            s.add(obj, ("metadata", "labels", ZONE_LABEL), f"zone object needs label {ZONE_LABEL}")
        elif zone_dir and obj.labels.get(ZONE_LABEL) != zone_dir:
            s.add(
                obj,
                ("metadata", "labels", ZONE_LABEL),
                f"zone label {obj.labels.get(ZONE_LABEL)!r} does not match its folder "
                f"zones/{zone_dir}/",
            )
        for path in obj.duplicate_keys:
            s.add(obj, path, "key written twice (YAML keeps only the last); remove one")


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


# --- LeaderWorkerSet ----------------------------------------------------------------------------


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


def _command(container: dict[str, Any]) -> list[str]:
    return [str(t) for t in (container.get("command") or []) + (container.get("args") or [])]


def _arg_path(cpath: FieldPath, container: dict[str, Any], flag: str) -> FieldPath:
    for key in ("args", "command"):
        items = container.get(key) or []
        for i, tok in enumerate(items):
            if str(tok) == flag or str(tok).startswith(flag + "="):
                return (*cpath, key, i)
    return (*cpath, "args")


def _image_version(image: str) -> tuple[int, int] | None:
    match = re.search(r":v?(\d+)\.(\d+)", image)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _flag(args: VllmServeArgs, flag: str) -> str | None:
    """The value of a flag the parser does not model (kept in ``args.unknown``)."""
    tokens = list(args.unknown)
    for i, tok in enumerate(tokens):
        if tok == flag and i + 1 < len(tokens):
            return tokens[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _rule_lws(s: _Set) -> None:
    for lws in s.of("LeaderWorkerSet"):
        lwt: FieldPath = ("spec", "leaderWorkerTemplate")
        size = lws.get(*lwt, "size", default=1)
        if lws.get(*lwt, "restartPolicy") not in _GROUP_RESTART:
            s.add(
                lws,
                (*lwt, "restartPolicy"),
                "must be RecreateGroupAfterStart (or RecreateGroupOnPodRestart): a group cannot "
                "serve with a pod missing",
            )
        if lws.get(*lwt, "leaderTemplate") is None:
            s.add(lws, (*lwt, "leaderTemplate"), "a leaderTemplate running 'vllm serve' is needed")
        zone = _expected_zone(lws)
        parsed: dict[str, VllmServeArgs] = {}
        for role, tpath, tmpl in _templates(lws):
            spec = tmpl.get("spec") or {}
            spath = (*tpath, "spec")
            zones = _affinity_zones(spec)
            if zones is None:
                s.add(
                    lws,
                    (*spath, "affinity"),
                    f"{role} pods need required nodeAffinity {ZONE_KEY} In [{zone or '<zone>'}]",
                )
            elif zone and zones != [zone]:
                s.add(
                    lws,
                    (*spath, "affinity", "nodeAffinity"),
                    f"{role} pods are pinned to {zones} but this is the {zone} overlay",
                )
            notes = (tmpl.get("metadata") or {}).get("annotations") or {}
            if str(notes.get(_DO_NOT_DISRUPT, "")).lower() != "true":
                s.add(
                    lws,
                    (*tpath, "metadata", "annotations"),
                    f'{role} pods need annotation {_DO_NOT_DISRUPT}: "true" (Karpenter would '
                    "otherwise replace a drifted or underused GPU node under a running group)",
                )
            tolerations = spec.get("tolerations") or []
            if not any((t or {}).get("key") == GPU for t in tolerations):
                s.add(
                    lws,
                    (*spath, "tolerations"),
                    f"{role} pods need a toleration for the {GPU} NoSchedule taint of GPU nodes",
                )
            _check_volumes(s, lws, role, spath, spec)
            containers = spec.get("containers") or []
            for ci, container in enumerate(containers):
                cpath: FieldPath = (*spath, "containers", ci)
                _check_container(s, lws, role, cpath, container, spec)
            if not containers:
                continue
            c0 = containers[0]
            c0path: FieldPath = (*spath, "containers", 0)
            tokens = _command(c0)
            if "vllm.entrypoints.openai.api_server" in " ".join(tokens):
                s.add(
                    lws,
                    (*c0path, "command"),
                    "python -m vllm.entrypoints.openai.api_server is deprecated; "
                    "use command [vllm, serve] with the model as first arg",
                )
                # Still check the engine flags it was given.
                tokens = ["vllm", "serve", *[str(a) for a in c0.get("args") or []]]
            try:
                args = parse_vllm_serve(tokens)
            except ConfigError as exc:
                s.add(lws, (*c0path, "command"), f"{exc}; expected command [vllm, serve]")
                continue
            parsed[role] = args
            _check_image(s, lws, c0path, c0, args)
            gpus = _int_or_none(((c0.get("resources") or {}).get("limits") or {}).get(GPU))
            tp, pp = args.tensor_parallel_size, args.pipeline_parallel_size
            if gpus is not None and isinstance(size, int) and tp * pp != size * gpus:
                s.add(
                    lws,
                    _arg_path(c0path, c0, "--tensor-parallel-size"),
                    f"TP x PP = {tp} x {pp} = {tp * pp} but size x GPUs per pod = "
                    f"{size} x {gpus} = {size * gpus}; they must be equal",
                )
            elif gpus is not None and tp != gpus:
                s.add(
                    lws,
                    _arg_path(c0path, c0, "--tensor-parallel-size"),
                    f"TP={tp} must equal GPUs per pod ({gpus}): TP runs inside a node, "
                    "PP across the group's nodes",
                )
            _check_instance(s, lws, spath, spec, gpus)
            if role == "leader":
                _check_leader(s, lws, c0path, c0, args, size)
            else:
                _check_worker(s, lws, c0path, c0, args)
        if "leader" in parsed and "worker" in parsed:
            lead, work = parsed["leader"], parsed["worker"]
            for attr in ("model", "tensor_parallel_size", "pipeline_parallel_size"):
                if getattr(lead, attr) != getattr(work, attr):
                    s.add(
                        lws,
                        (*lwt, "workerTemplate", "spec", "containers", 0, "args"),
                        f"worker {attr}={getattr(work, attr)!r} differs from the leader's "
                        f"{getattr(lead, attr)!r}",
                    )
        leader_ready = lws.get("spec", "startupPolicy") == "LeaderReady"
        if leader_ready and "leader" in parsed and parsed["leader"].nnodes is not None:
            s.add(
                lws,
                ("spec", "startupPolicy"),
                "LeaderReady deadlocks the MP backend (the leader is Ready only after its "
                "workers join); use LeaderCreated",
            )


def _check_image(
    s: _Set, lws: LoadedObject, cpath: FieldPath, container: dict[str, Any], args: VllmServeArgs
) -> None:
    image = str(container.get("image", ""))
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        s.add(
            lws, (*cpath, "image"), f"{image!r}: pin a release tag (e.g. vllm/vllm-openai:v0.32.0)"
        )
        return
    version = _image_version(image)
    if image.startswith("vllm/vllm-openai") and version is not None:
        if version < _MIN_VLLM:
            s.add(
                lws,
                (*cpath, "image"),
                f"{image!r} is years old; pin a current release (>= v{_MIN_VLLM[0]}."
                f"{_MIN_VLLM[1]}, e.g. v0.32.0)",
            )
        elif args.distributed_executor_backend == "ray":
            s.add(
                lws,
                _arg_path(cpath, container, "--distributed-executor-backend"),
                "the stock vllm/vllm-openai image has no Ray since ~v0.19; use the MP backend "
                "(--nnodes/--node-rank/--headless) or an image with Ray",
            )


def _check_instance(
    s: _Set, lws: LoadedObject, spath: FieldPath, spec: dict[str, Any], gpus: int | None
) -> None:
    itype = (spec.get("nodeSelector") or {}).get("node.kubernetes.io/instance-type")
    if itype is None:
        s.add(lws, (*spath, "nodeSelector"), "set node.kubernetes.io/instance-type (GPU node type)")
        return
    try:
        info = catalog.instance_type(str(itype))
    except ConfigError as exc:
        s.add(lws, (*spath, "nodeSelector", "node.kubernetes.io/instance-type"), str(exc))
        return
    if gpus is not None and gpus > info.gpus:
        s.add(
            lws,
            (*spath, "nodeSelector", "node.kubernetes.io/instance-type"),
            f"{itype} has {info.gpus} GPUs but each pod asks for {gpus}",
        )


def _check_leader(
    s: _Set,
    lws: LoadedObject,
    cpath: FieldPath,
    container: dict[str, Any],
    args: VllmServeArgs,
    size: Any,
) -> None:
    if not args.served_model_name:
        s.add(lws, (*cpath, "args"), "add --served-model-name so clients can send a short name")
    try:
        spec = catalog.model(args.model)
    except ConfigError:
        spec = None
    if spec is not None and not spec.chat:
        s.add(
            lws,
            (*cpath, "args", 0),
            f"{args.model} has no chat template; /v1/chat/completions needs an instruct model",
        )
    if spec is not None and spec.heads % args.tensor_parallel_size:
        # vLLM refuses this at startup, after minutes of scheduling and image pulls.
        s.add(
            lws,
            _arg_path(cpath, container, "--tensor-parallel-size"),
            f"{args.model} has {spec.heads} attention heads, not divisible by "
            f"TP={args.tensor_parallel_size}; use a TP that divides {spec.heads}",
        )
    if args.headless:
        s.add(lws, _arg_path(cpath, container, "--headless"), "the leader must serve the API")
    if isinstance(size, int) and size > 1:
        if args.nnodes not in ("$(LWS_GROUP_SIZE)", str(size)):
            s.add(
                lws,
                _arg_path(cpath, container, "--nnodes"),
                f"--nnodes must be $(LWS_GROUP_SIZE) (= size {size}), got {args.nnodes!r}",
            )
        if args.node_rank not in ("0", None):
            s.add(lws, _arg_path(cpath, container, "--node-rank"), "leader --node-rank must be 0")
        if args.nnodes is not None and args.master_addr != "$(LWS_LEADER_ADDRESS)":
            s.add(
                lws,
                _arg_path(cpath, container, "--master-addr"),
                "--master-addr must be $(LWS_LEADER_ADDRESS)",
            )
    ports = [p.get("containerPort") for p in container.get("ports") or []]
    if args.port not in ports:
        s.add(lws, (*cpath, "ports"), f"containerPort {args.port} (vllm serve --port) not exposed")
    port_names = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    for probe in ("readinessProbe", "startupProbe"):
        get = (container.get(probe) or {}).get("httpGet")
        if not get:
            s.add(lws, (*cpath, probe), f"leader needs a {probe} httpGet on /health")
            continue
        if get.get("path") != "/health":
            s.add(lws, (*cpath, probe, "httpGet", "path"), "probe path must be /health")
        port = port_names.get(get.get("port"), get.get("port"))
        if port != args.port:
            s.add(
                lws,
                (*cpath, probe, "httpGet", "port"),
                f"probe port {get.get('port')!r} is not the API port {args.port}",
            )
    startup = container.get("startupProbe") or {}
    budget_s = int(startup.get("periodSeconds", 10)) * int(startup.get("failureThreshold", 3))
    if startup and budget_s < 600:
        s.add(
            lws,
            (*cpath, "startupProbe", "failureThreshold"),
            f"startup budget {budget_s}s is too short for loading a large model (>= 600s)",
        )
    if isinstance(size, int) and size > 1 and startup and budget_s > _TORCH_DIST_TIMEOUT_S:
        timeout_s = _int_or_none(_flag(args, "--distributed-timeout-seconds"))
        if timeout_s is None or timeout_s < budget_s:
            s.add(
                lws,
                _arg_path(cpath, container, "--distributed-timeout-seconds"),
                f"the startup probe allows {budget_s}s but torch.distributed gives up after "
                f"{timeout_s or _TORCH_DIST_TIMEOUT_S}s; set --distributed-timeout-seconds "
                f"{budget_s}",
            )
    _check_shutdown(s, lws, cpath, container, args)
    if args.api_key:
        s.add(
            lws,
            _arg_path(cpath, container, "--api-key"),
            "never put the API key in args; use env VLLM_API_KEY from a Secret",
        )


def _check_shutdown(
    s: _Set, lws: LoadedObject, cpath: FieldPath, container: dict[str, Any], args: VllmServeArgs
) -> None:
    # Graceful scale-down: vLLM drains for --shutdown-timeout seconds after SIGTERM, so the pod's
    # terminationGracePeriodSeconds must be at least that long or the drain is cut short.
    tokens = list(args.unknown)
    timeout_s = None
    for i, tok in enumerate(tokens):
        if tok == "--shutdown-timeout" and i + 1 < len(tokens):
            timeout_s = _int_or_none(tokens[i + 1])
        elif tok.startswith("--shutdown-timeout="):
            timeout_s = _int_or_none(tok.split("=", 1)[1])
    tmpl = lws.get("spec", "leaderWorkerTemplate", "leaderTemplate", "spec") or {}
    grace_s = int(tmpl.get("terminationGracePeriodSeconds", 30))
    pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    sleep_s = _int_or_none(pre_stop.get("seconds")) or 0
    if timeout_s is None:
        s.add(lws, (*cpath, "args"), "add --shutdown-timeout N so scale-down drains requests")
    elif grace_s < timeout_s + sleep_s:
        s.add(
            lws,
            _arg_path(cpath, container, "--shutdown-timeout"),
            f"preStop sleep {sleep_s}s + --shutdown-timeout {timeout_s}s exceeds "
            f"terminationGracePeriodSeconds {grace_s}s",
        )
    if not pre_stop:
        s.add(
            lws,
            (*cpath, "lifecycle"),
            "add a preStop sleep: the gateway and the NLB keep sending to a terminating leader "
            "until its endpoint removal reaches them",
        )


def _check_worker(
    s: _Set, lws: LoadedObject, cpath: FieldPath, container: dict[str, Any], args: VllmServeArgs
) -> None:
    if args.nnodes is None:
        return  # Ray workers (a custom image) join differently; the image rule covers it
    if not args.headless:
        s.add(lws, (*cpath, "args"), "workers must run 'vllm serve ... --headless' (no API server)")
    if args.node_rank != "$(LWS_WORKER_INDEX)":
        s.add(
            lws,
            _arg_path(cpath, container, "--node-rank"),
            f"worker --node-rank must be $(LWS_WORKER_INDEX), got {args.node_rank!r}",
        )
    if args.master_addr != "$(LWS_LEADER_ADDRESS)":
        s.add(
            lws,
            _arg_path(cpath, container, "--master-addr"),
            "--master-addr must be $(LWS_LEADER_ADDRESS)",
        )


def _check_container(
    s: _Set,
    lws: LoadedObject,
    role: str,
    cpath: FieldPath,
    container: dict[str, Any],
    pod_spec: dict[str, Any],
) -> None:
    for ei, env in enumerate(container.get("env") or []):
        name = str((env or {}).get("name", ""))
        if name == "CUDA_VISIBLE_DEVICES":
            s.add(
                lws,
                (*cpath, "env", ei),
                "do not set CUDA_VISIBLE_DEVICES; the NVIDIA device plugin assigns GPUs",
            )
        elif _SECRET_ENV.search(name) and "value" in (env or {}):
            s.add(
                lws,
                (*cpath, "env", ei, "value"),
                f"{name} has a literal value; take it from a Secret (valueFrom.secretKeyRef)",
            )
    uid = (container.get("securityContext") or {}).get("runAsUser")
    uid = uid if uid is not None else (pod_spec.get("securityContext") or {}).get("runAsUser")
    names = {str((e or {}).get("name")) for e in container.get("env") or []}
    if isinstance(uid, int) and uid != 0 and not names & {"USER", "LOGNAME"}:
        s.add(
            lws,
            (*cpath, "env"),
            f"uid {uid} has no /etc/passwd entry in the image: set env USER (or LOGNAME), or "
            "getpass.getuser() (torch inductor's cache dir) fails at engine start",
        )
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    if GPU not in limits:
        s.add(lws, (*cpath, "resources", "limits"), f"{role} must request GPUs in limits ({GPU})")
    elif GPU in requests and str(requests[GPU]) != str(limits[GPU]):
        s.add(lws, (*cpath, "resources", "requests", GPU), "GPU requests must equal limits")
    for res in ("cpu", "memory"):
        if res not in requests or res not in limits:
            s.add(lws, (*cpath, "resources"), f"set {res} requests and limits")
    sec = container.get("securityContext") or {}
    pod_sec = pod_spec.get("securityContext") or {}
    if sec.get("allowPrivilegeEscalation") is not False:
        s.add(
            lws,
            (*cpath, "securityContext", "allowPrivilegeEscalation"),
            "must be false",
        )
    if "ALL" not in ((sec.get("capabilities") or {}).get("drop") or []):
        s.add(lws, (*cpath, "securityContext", "capabilities"), "drop ALL capabilities")
    if not (sec.get("runAsNonRoot") or pod_sec.get("runAsNonRoot")):
        s.add(lws, (*cpath, "securityContext"), "set runAsNonRoot: true (pod or container)")
    seccomp = (sec.get("seccompProfile") or pod_sec.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        s.add(lws, (*cpath, "securityContext"), "set seccompProfile.type: RuntimeDefault")


def _check_volumes(
    s: _Set, lws: LoadedObject, role: str, spath: FieldPath, spec: dict[str, Any]
) -> None:
    volumes = {v.get("name"): (i, v) for i, v in enumerate(spec.get("volumes") or [])}
    containers = spec.get("containers") or []
    shm = [
        m
        for c in containers
        for m in (c.get("volumeMounts") or [])
        if m.get("mountPath") == "/dev/shm"
    ]
    shm_ok = any(
        ((volumes.get(m.get("name"), (0, {}))[1].get("emptyDir") or {}).get("medium") == "Memory")
        for m in shm
    )
    if not shm_ok:
        s.add(
            lws,
            (*spath, "volumes"),
            f"{role} pods need /dev/shm from an emptyDir with medium: Memory (NCCL, PyTorch)",
        )
    for name, (vi, vol) in volumes.items():
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim:
            continue
        vpath = (*spath, "volumes", vi, "persistentVolumeClaim", "claimName")
        pvc = s.named("PersistentVolumeClaim", str(claim))
        if pvc is None:
            if s.missing("PersistentVolumeClaim", str(claim)):
                s.add(lws, vpath, f"volume {name!r}: no PersistentVolumeClaim {claim!r} here")
            continue
        modes = pvc.get("spec", "accessModes", default=[]) or []
        if "ReadWriteMany" not in modes and "ReadOnlyMany" not in modes:
            s.add(
                lws,
                vpath,
                f"PVC {claim!r} is {modes}: one RWO volume cannot serve pods on several nodes; "
                "use a per-zone ReadWriteMany volume (EFS/FSx)",
            )
        pvc_zone = pvc.labels.get(ZONE_LABEL)
        zone = _expected_zone(lws)
        if pvc_zone and zone and pvc_zone != zone:
            s.add(lws, vpath, f"PVC {claim!r} belongs to zone {pvc_zone}, this LWS to {zone}")


def _rule_shared_storage(s: _Set) -> None:
    users: dict[str, set[str]] = {}
    first: dict[str, tuple[LoadedObject, FieldPath]] = {}
    for lws in s.of("LeaderWorkerSet"):
        for _role, tpath, tmpl in _templates(lws):
            for vi, vol in enumerate((tmpl.get("spec") or {}).get("volumes") or []):
                claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    users.setdefault(str(claim), set()).add(lws.name)
                    path = (*tpath, "spec", "volumes", vi, "persistentVolumeClaim", "claimName")
                    first.setdefault(str(claim), (lws, path))
    for claim, names in users.items():
        if len(names) > 1:
            lws, path = first[claim]
            s.add(
                lws,
                path,
                f"PVC {claim!r} is shared by {sorted(names)}; give each zone its own volume",
            )


# --- Service / NLB -----------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())


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


# --- Gateway API ---------------------------------------------------------------------------------


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


# --- autoscaling -------------------------------------------------------------------------------


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


# --- Karpenter, secrets --------------------------------------------------------------------------


def _rule_karpenter(s: _Set) -> None:
    for pool in s.of("NodePool"):
        tspec: FieldPath = ("spec", "template", "spec")
        ref = pool.get(*tspec, "nodeClassRef") or {}
        if s.missing("EC2NodeClass", str(ref.get("name"))):
            s.add(pool, (*tspec, "nodeClassRef", "name"), f"no EC2NodeClass {ref.get('name')!r}")
        zone = _expected_zone(pool)
        reqs = pool.get(*tspec, "requirements") or []
        zones = [v for r in reqs if r.get("key") == ZONE_KEY for v in (r.get("values") or [])]
        if zone and zones != [zone]:
            s.add(pool, (*tspec, "requirements"), f"must require {ZONE_KEY} In [{zone}]")
        if not any(t.get("key") == GPU for t in pool.get(*tspec, "taints") or []):
            s.add(pool, (*tspec, "taints"), f"taint GPU nodes with {GPU}:NoSchedule")
        budgets = pool.get("spec", "disruption", "budgets") or []
        frozen = any(
            str(b.get("nodes")) == "0"
            and "Drifted" in (b.get("reasons") or ["Drifted"])
            and not b.get("schedule")
            for b in budgets
        )
        if not frozen:
            s.add(
                pool,
                ("spec", "disruption", "budgets"),
                'add a budget {nodes: "0", reasons: [Drifted]}: a drifted GPU node (new AMI, '
                "edited NodePool) is otherwise replaced under a running group mid-session",
            )
    for node_class in s.of("EC2NodeClass"):
        for ti, term in enumerate(node_class.get("spec", "amiSelectorTerms") or []):
            alias = str(term.get("alias", ""))
            if alias.endswith("@latest"):
                s.add(
                    node_class,
                    ("spec", "amiSelectorTerms", ti, "alias"),
                    f"{alias!r} drifts every node when AWS publishes an AMI; pin a release "
                    "(e.g. al2023@v20260714, lab.yaml eks.karpenter_ami_alias)",
                )


def _rule_monitoring(s: _Set) -> None:
    for monitor in s.of("PodMonitor"):
        if "release" not in monitor.labels:
            s.add(
                monitor,
                ("metadata", "labels"),
                "add label release: <kube-prometheus-stack release> (its Prometheus selects "
                "PodMonitors by it; lab.yaml monitoring.helm_release)",
            )


def _rule_rbac(s: _Set) -> None:
    for role in s.of("Role"):
        for ri, rule in enumerate(role.get("rules") or []):
            resources = [str(r) for r in rule.get("resources") or []]
            verbs = [str(v) for v in rule.get("verbs") or []]
            if "*" in resources or "*" in verbs or "*" in (rule.get("apiGroups") or []):
                s.add(role, ("rules", ri), "no wildcards: grant the verbs and resources used")
            if "secrets" in resources and "participant" in role.name:
                s.add(role, ("rules", ri, "resources"), "participants get no access to Secrets")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for obj in s.of(kind):
            s.add(obj, ("kind",), f"the lab grants nothing cluster-wide; use a Role, not {kind}")


def _rule_cluster_autoscaler(s: _Set) -> None:
    for cm in s.of("ConfigMap"):
        if cm.name == "cluster-autoscaler-status":
            s.add(
                cm,
                ("metadata", "name"),
                "cluster-autoscaler-status is the status Cluster Autoscaler *writes*; configure "
                "CA by flags on its Deployment, or use a Karpenter NodePool for GPU nodes",
            )


def _rule_secrets(s: _Set) -> None:
    for secret in s.of("Secret"):
        for key in ("data", "stringData"):
            if secret.get(key):
                s.add(secret, (key,), "no secret values in manifests; create them out of band")


_RULES: tuple[Callable[[_Set], None], ...] = (
    _rule_labels,
    _rule_lws,
    _rule_shared_storage,
    _rule_services,
    _rule_routes,
    _rule_autoscaling,
    _rule_gateway_policies,
    _rule_karpenter,
    _rule_monitoring,
    _rule_rbac,
    _rule_cluster_autoscaler,
    _rule_secrets,
)


def check_rules(
    objects: list[LoadedObject],
    *,
    is_folder: bool = True,
    schema_invalid: frozenset[int] = frozenset(),
) -> list[Problem]:
    """Run every lab rule over ``objects``.

    Args:
        objects: from :func:`labutils.manifests.load_objects`.
        is_folder: the objects are a whole deployment (a folder); references to objects that
            are absent (a Service, Gateway, PVC, HPA target) are then errors. For a single file
            only the rules that need no other object run.
        schema_invalid: ``id()`` of objects that failed their schema; only the label rules
            check them (their shape cannot be trusted, and the schema problem is reported).
    """
    valid = [o for o in objects if id(o) not in schema_invalid]
    s = _Set(valid, objects, is_folder, [])
    for rule in _RULES:
        rule(s)
    return s.problems
