"""Clean-up and instructor reset, with proof that nothing is left (notebook 06).

:func:`snapshot` records what the lab holds right now (twin: processes, their listening ports
and state files; EKS: the labelled objects a reset would delete). After ``backend.reset(yes=
True)``, :func:`verify_clean` looks at each recorded item again, independently of the
backend's own bookkeeping (a PID is probed with its start time, a port by connecting to it, a
file on disk, an object by listing the cluster again), and :func:`check_clean` raises if any is
still there. :func:`eks_reset_scope` shows what ``labctl reset --target eks`` deletes and keeps.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from labutils.errors import LabError, ValidationError
from labutils.kube.labels import LAB_LABEL
from labutils.manifests import load_objects
from labutils.protocol import Backend
from labutils.targets import fault_injector

__all__ = [
    "RESET_KINDS",
    "LabFootprint",
    "check_clean",
    "check_selector_matches_scope",
    "eks_reset_scope",
    "prepare",
    "snapshot",
    "verify_clean",
]

# Files the twin's controller writes while running; logs/ and rendered/ are kept on purpose
# (they explain a crash after the fact and are not running state).
_STATE_FILES = ("state.json", "controller.json", "haproxy.sock", "master.sock")

# Kinds `labctl reset --target eks` deletes (labutils.targets.eks.RESET_KINDS, without importing
# the kubernetes client on the local target).
RESET_KINDS = ("HTTPRoute", "Gateway", "ScaledObject", "HorizontalPodAutoscaler", "PodMonitor",
                "LeaderWorkerSet", "Service", "ConfigMap", "Secret", "NetworkPolicy")  # fmt: skip
_PARTICIPANT_KINDS = ("Namespace", "Role", "RoleBinding", "ResourceQuota", "ServiceAccount")


@dataclass(frozen=True)
class LabFootprint:
    """What the lab held at one moment.

    Attributes:
        target: ``local`` or ``eks``.
        processes: twin processes: role, pid, create_time.
        ports: listening TCP ports of those processes on 127.0.0.1.
        state_files: the twin's running-state files that existed.
        objects: EKS objects (namespace, kind, name) a reset deletes.
    """

    target: str
    processes: tuple[dict[str, Any], ...] = ()
    ports: tuple[int, ...] = ()
    state_files: tuple[str, ...] = ()
    objects: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)

    def to_frame(self) -> pd.DataFrame:
        """One row per item: kind (process, port, state file, object) and its name."""
        rows = [{"item": "process", "name": f"{p['role']} pid {p['pid']}"} for p in self.processes]
        rows += [{"item": "port", "name": f"127.0.0.1:{p}"} for p in self.ports]
        rows += [{"item": "state file", "name": f} for f in self.state_files]
        rows += [
            {"item": "object", "name": f"{ns}/{kind}/{name}"} for ns, kind, name in self.objects
        ]
        return pd.DataFrame(rows, columns=["item", "name"])


def prepare(backend: Backend, rendered: str | Path, *, start: bool = True) -> pd.DataFrame:
    """Make sure there is something to clean up: apply the lab (``start``) and return status.

    With ``start=False`` (e.g. an instructor resetting a cluster the participants used) it only
    reads the status; an empty table then means there is nothing running.
    """
    if start:
        backend.apply(Path(rendered))
    try:
        return backend.status()
    except LabError:  # nothing running (the twin says so with an error)
        return pd.DataFrame(columns=["zone", "lws", "replicas", "ready_replicas"])


def snapshot(backend: Backend) -> LabFootprint:
    """Record what the lab holds now (call before the reset)."""
    injector = fault_injector(backend)
    if injector is not None:
        from labutils.targets.twin.state import read_state

        state_dir = Path(injector.state_dir)
        state = read_state(state_dir) or {}
        records = [state.get("controller") or {}, *state.get("processes", [])]
        leftovers = injector.leftovers()
        alive = set(leftovers["pids"])
        processes = tuple(
            {"role": r.get("role", "?"), "pid": int(r["pid"]),
             "create_time": float(r.get("create_time", 0.0))}
            for r in records if r.get("pid") and int(r["pid"]) in alive
        )  # fmt: skip
        files = tuple(str(state_dir / f) for f in _STATE_FILES if (state_dir / f).exists())
        return LabFootprint("local", processes, tuple(leftovers["ports"]), files)
    plan = backend.reset(yes=False)
    objects = tuple(
        (str(r["namespace"]), str(r["kind"]), str(r["name"])) for r in plan.to_dict("records")
    )
    return LabFootprint(backend.target, objects=objects)


def _pid_alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        same = abs(proc.create_time() - create_time) < 0.5  # not a recycled PID
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def verify_clean(backend: Backend, before: LabFootprint) -> pd.DataFrame:
    """Look at every item of ``before`` again; one row each with ``gone`` True/False.

    Processes are probed by PID *and* start time, ports by connecting to 127.0.0.1, state files
    on disk, EKS objects by listing the cluster again (a dry-run reset).
    """
    rows = []
    for p in before.processes:
        alive = _pid_alive(int(p["pid"]), float(p["create_time"]))
        rows.append({"item": "process", "name": f"{p['role']} pid {p['pid']}",
                     "now": "running" if alive else "exited", "gone": not alive})  # fmt: skip
    for port in before.ports:
        is_open = _port_open(port)
        rows.append({"item": "port", "name": f"127.0.0.1:{port}",
                     "now": "accepts connections" if is_open else "connection refused",
                     "gone": not is_open})  # fmt: skip
    for name in before.state_files:
        exists = Path(name).exists()
        rows.append({"item": "state file", "name": name,
                     "now": "exists" if exists else "removed", "gone": not exists})  # fmt: skip
    if before.objects:
        still = {
            (str(r["namespace"]), str(r["kind"]), str(r["name"]))
            for r in backend.reset(yes=False).to_dict("records")
        }
        for obj in before.objects:
            rows.append({"item": "object", "name": "/".join(obj),
                         "now": "exists" if obj in still else "deleted",
                         "gone": obj not in still})  # fmt: skip
    return pd.DataFrame(rows, columns=["item", "name", "now", "gone"])


def check_clean(verified: pd.DataFrame, before: LabFootprint) -> pd.DataFrame:
    """Raise unless every item recorded before the reset is gone.

    Raises:
        ValidationError: names what is left and how to remove it.
    """
    if before.to_frame().empty:
        raise ValidationError(
            "nothing was recorded before the reset, so nothing is proven; take snapshot() while "
            "the lab is running"
        )
    left = verified[~verified["gone"].astype(bool)]
    if not left.empty:
        problems = [f"{r['item']} {r['name']}: {r['now']}" for r in left.to_dict("records")]
        raise ValidationError(
            f"reset left {len(problems)} item(s), first {problems[0]}; run 'labctl reset --yes' "
            "again (target local: also check 'labctl twin status')",
            problems,
        )
    return verified


def eks_reset_scope(rendered: str | Path) -> pd.DataFrame:
    """What ``labctl reset --target eks`` would do with each rendered object, and why.

    It deletes only objects labelled ``app.kubernetes.io/part-of=vllm-lws-lab`` of the reset
    kinds in lab namespaces; namespaces, RBAC and quotas stay (``labctl participants`` owns
    them); cluster-scoped Karpenter objects and PVCs (the model cache) stay too.
    """
    root = Path(rendered)
    objects = load_objects(root)
    lab_namespaces = {o.name for o in objects if o.kind == "Namespace"}
    rows = []
    for obj in objects:
        labels = (obj.data.get("metadata") or {}).get("labels") or {}
        rel = obj.file.relative_to(root)
        labelled = labels.get(LAB_LABEL) == "vllm-lws-lab"
        if rel.parts[0] == "optional":
            action, why = "—", "optional/ is never applied (KEDA replaces the HPAs)"
        elif obj.namespace and obj.namespace not in lab_namespaces and obj.kind in RESET_KINDS:
            action, why = "keep", f"namespace {obj.namespace} is not a lab namespace"
        elif obj.kind in RESET_KINDS and labelled:
            action, why = "delete", f"kind {obj.kind} + label {LAB_LABEL}=vllm-lws-lab"
        elif obj.kind in _PARTICIPANT_KINDS:
            action, why = "keep", "belongs to the namespace: 'labctl participants delete'"
        elif obj.namespace is None:
            action, why = "keep", "cluster-scoped (Karpenter capacity): delete by hand if unused"
        else:
            action, why = "keep", f"{obj.kind} is not a reset kind (the model cache survives)"
        rows.append({"kind": obj.kind, "name": obj.name, "namespace": obj.namespace or "",
                     "reset": action, "why": why})  # fmt: skip
    return pd.DataFrame(rows, columns=["kind", "name", "namespace", "reset", "why"])


def check_selector_matches_scope(objects: pd.DataFrame, scope: pd.DataFrame) -> pd.DataFrame:
    """The objects a label selector picked (in the notebook) are those :func:`eks_reset_scope`
    deletes.

    Args:
        objects: one row per rendered object with ``kind``, ``name``, ``namespace`` and a
            boolean ``deleted_by_reset``.
        scope: :func:`eks_reset_scope` of the same folder.

    Raises:
        ValidationError: names the objects one side deletes and the other keeps.
    """
    mine = {(r.kind, r.name, r.namespace or "") for r in objects.itertuples() if r.deleted_by_reset}
    planned = {
        (r.kind, r.name, r.namespace or "") for r in scope.itertuples() if r.reset == "delete"
    }
    if not planned:
        raise ValidationError("the reset plan deletes nothing; render the lab's manifests first")
    problems = [
        f"{k}/{n} selected here but kept by the reset" for k, n, _ in sorted(mine - planned)
    ]
    problems += [f"{k}/{n} deleted by the reset but not selected here"
                 for k, n, _ in sorted(planned - mine)]  # fmt: skip
    if problems:
        raise ValidationError(f"label selector vs reset plan: {problems[0]}", problems)
    return scope[scope["reset"].eq("delete")][["kind", "name", "namespace"]].reset_index(drop=True)
