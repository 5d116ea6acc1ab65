"""Reset proof: recorded processes, ports and state files are probed again after the reset."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from labutils import figures
from labutils.config import LabConfig
from labutils.errors import ValidationError
from labutils.lessons import n06_cleanup as cleanup
from labutils.manifests import render
from labutils.targets.twin import TwinBackend
from labutils.targets.twin.state import record_of

# A child that listens on a free 127.0.0.1 port and prints it (a stand-in twin process).
_LISTENER = (
    "import socket, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(60)\n"
)


def test_snapshot_then_reset_is_verified_independently(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        state = {"controller": record_of(proc.pid, "controller"), "processes": []}
        (tmp_path / "state.json").write_text(json.dumps(state))
        backend = TwinBackend(tmp_path)
        before = cleanup.snapshot(backend)
        assert [p["pid"] for p in before.processes] == [proc.pid]
        assert before.ports == (port,)
        assert str(tmp_path / "state.json") in before.state_files
        still = cleanup.verify_clean(backend, before)
        assert not still["gone"].any()
        with pytest.raises(ValidationError, match="reset left 3 item"):
            cleanup.check_clean(still, before)
        backend.reset(yes=True)  # the twin's own down(): kills recorded PIDs, removes state
        assert proc.wait(timeout=10) is not None
        verified = cleanup.check_clean(cleanup.verify_clean(backend, before), before)
        assert verified["gone"].all()
        assert set(verified["now"]) == {"exited", "connection refused", "removed"}
        assert figures.plot_reset(verified).axes[0].get_ylabel().startswith("count")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nothing_recorded_proves_nothing(tmp_path: Path) -> None:
    backend = TwinBackend(tmp_path)
    before = cleanup.snapshot(backend)
    assert before.to_frame().empty
    with pytest.raises(ValidationError, match="nothing was recorded"):
        cleanup.check_clean(cleanup.verify_clean(backend, before), before)


def test_port_probe_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        footprint = cleanup.LabFootprint("local", ports=(port,))
        frame = cleanup.verify_clean(TwinBackend.__new__(TwinBackend), footprint)
        assert frame.loc[0, "now"] == "accepts connections" and not frame.loc[0, "gone"]


def test_eks_reset_scope_deletes_labelled_kinds_only(tmp_path: Path) -> None:
    render(LabConfig(zones=("us-west-2a",)), tmp_path)
    scope = cleanup.eks_reset_scope(tmp_path).set_index(["kind", "name"])["reset"]
    assert scope[("LeaderWorkerSet", "vllm-us-west-2a")] == "delete"
    assert scope[("HTTPRoute", "vllm")] == "delete"
    assert scope[("Namespace", "vllm-lab")] == "keep"
    assert scope[("ResourceQuota", "vllm-lab-gpu")] == "keep"
    assert scope[("PersistentVolumeClaim", "vllm-models-us-west-2a")] == "keep"
    assert scope[("NodePool", "vllm-gpu-us-west-2a")] == "keep"
    assert scope[("ScaledObject", "vllm-us-west-2a")] == "—"
    # the lab's copy of the adapter rules lives in the lab namespace (rendering never writes
    # into another one): a reset removes it with the rest, the next apply brings it back
    assert scope[("ConfigMap", "vllm-lab-adapter-rules")] == "delete"


def test_selector_check_compares_with_the_reset_plan(tmp_path: Path) -> None:
    render(LabConfig(zones=("us-west-2a",)), tmp_path)
    scope = cleanup.eks_reset_scope(tmp_path)
    objects = scope[["kind", "name", "namespace"]].assign(
        deleted_by_reset=scope["reset"] == "delete"
    )
    kept = cleanup.check_selector_matches_scope(objects, scope)
    assert ("LeaderWorkerSet", "vllm-us-west-2a") in set(
        zip(kept["kind"], kept["name"], strict=True)
    )
    # a selector that forgets the kinds rule also picks the lab's Namespace (which reset keeps)
    careless = objects.assign(
        deleted_by_reset=objects["deleted_by_reset"] | objects["kind"].eq("Namespace")
    )
    with pytest.raises(ValidationError, match="Namespace/vllm-lab selected here"):
        cleanup.check_selector_matches_scope(careless, scope)
    missing = objects.assign(
        deleted_by_reset=objects["deleted_by_reset"] & objects["kind"].ne("Secret")
    )
    with pytest.raises(ValidationError, match="not selected here"):
        cleanup.check_selector_matches_scope(missing, scope)
