"""LeaderWorkerSet rules: the vLLM command, TP x PP layout, probes, shutdown, security,
volumes, and the EKS start-up settings (docs/eks-review.md #1, #7, #9, #10).
"""

from __future__ import annotations

import re
from typing import Any

from labutils import catalog
from labutils.errors import ConfigError
from labutils.manifests.loader import FieldPath, LoadedObject
from labutils.manifests.rules._base import (
    _DO_NOT_DISRUPT,
    _GROUP_RESTART,
    _MIN_VLLM,
    _SECRET_ENV,
    _TORCH_DIST_TIMEOUT_S,
    GPU,
    ZONE_KEY,
    ZONE_LABEL,
    _affinity_zones,
    _expected_zone,
    _int_or_none,
    _Set,
    _templates,
)
from labutils.vllm_args import VllmServeArgs, parse_vllm_serve

__all__ = ["_rule_lws", "_rule_shared_storage"]


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
