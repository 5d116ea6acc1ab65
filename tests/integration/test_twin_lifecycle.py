"""Twin lifecycle: idempotent up, LWS recreate, scaling without dropped requests, clean down,
crash cleanup, and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from twin_fixtures import ENGINE, wait_for, write_rendered
from twin_gateway_client import send_requests

from labutils.cli import main as labctl
from labutils.errors import TwinError
from labutils.targets.twin import TwinBackend

WEIGHTS = {"us-west-2a": 1, "us-west-2b": 1}


def _tree(pids: list[int]) -> dict[int, psutil.Process]:
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs[pid] = proc
            for child in proc.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            continue
    return procs


def _ports(procs: dict[int, psutil.Process]) -> set[int]:
    return {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in procs
    }


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _recorded_pids(twin: TwinBackend) -> list[int]:
    state = twin._state()
    return [int(state["controller"]["pid"])] + [int(p["pid"]) for p in state["processes"]]


def test_up_idempotent_scale_recreate_and_clean_down(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", WEIGHTS, replicas=1)
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, model_load_s=0.3, time_scale=0.2)
    try:
        twin.up(rendered, timeout_s=60)
        first = twin._state()["controller"]["pid"]
        twin.up(rendered, timeout_s=60)  # idempotent: same controller
        assert twin._state()["controller"]["pid"] == first

        # a crashed engine is recreated as a whole group (RecreateGroupOnPodRestart)
        leader = twin.groups().query("role == 'leader' and group == 'vllm-us-west-2a-0'")
        os.kill(int(leader["pid"].iloc[0]), signal.SIGKILL)
        wait_for(
            lambda: twin.groups().query("role == 'leader' and group == 'vllm-us-west-2a-0'"),
            lambda row: int(row["restarts"].iloc[0]) == 1 and bool(row["ready"].iloc[0]),
            "group vllm-us-west-2a-0 recreated once and ready",
        )

        # scale up then down while requests flow: none may fail
        url = twin.endpoints().gateway_url

        async def under_load() -> list[int]:
            task = asyncio.create_task(send_requests(url, 150, concurrency=4, max_tokens=20))
            # 4 groups need a 4th HAProxy slot (3 planned): a hitless master-worker reload
            await asyncio.to_thread(twin.scale, "vllm-us-west-2a", 4)
            await asyncio.to_thread(twin.wait_ready, 30)
            await asyncio.to_thread(twin.scale, "vllm-us-west-2a", 1)
            return [r["status"] for r in await task]

        statuses = asyncio.run(under_load())
        assert statuses and all(s == 200 for s in statuses), statuses
        status = twin.status().set_index("lws")
        assert status.loc["vllm-us-west-2a", "replicas"] == 1
        with pytest.raises(TwinError, match="unknown LWS"):
            twin.scale("vllm-nowhere", 2)

        pids = _recorded_pids(twin)
        procs = _tree(pids)
        ports = _ports(procs)
        assert len(ports) >= 2 + 3  # gateway, stats, zone frontends, engines
    finally:
        twin.down()
    wait_for(
        lambda: [p.pid for p in procs.values() if p.is_running() and p.status() != "zombie"],
        lambda alive: not alive,
        "every process of the twin to exit",
    )
    assert all(_refused(p) for p in ports)
    assert twin.leftovers() == {"pids": [], "ports": []}
    assert twin.down() == []  # idempotent


def test_down_cleans_up_after_a_crashed_controller(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1}, replicas=2)
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, model_load_s=0.2)
    try:
        twin.up(rendered, timeout_s=60)
        pids = _recorded_pids(twin)
        procs = _tree(pids)
        dry_run = twin.reset()  # what `labctl reset --target local` would stop
        assert len(dry_run) == len(pids) and dry_run["alive"].all()
        os.kill(pids[0], signal.SIGKILL)  # the controller dies; its children stay behind
        controller = procs[pids[0]]
        wait_for(
            lambda: controller.is_running() and controller.status() != "zombie",
            lambda running: not running,
            "the killed controller to exit",
        )
        assert any(p.is_running() for pid, p in procs.items() if pid != pids[0])
    finally:
        stopped = twin.down()
    assert set(pids[1:]) <= set(stopped)
    assert not twin.reset(yes=True)["alive"].any()
    assert not [p for p in procs.values() if p.is_running() and p.status() != "zombie"]


def test_cli_up_status_fail_restore_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = write_rendered(tmp_path / "rendered", WEIGHTS, replicas=1)
    state = str(tmp_path / "state")
    engine = ENGINE
    base = ["twin"]
    common = ["--state-dir", state, "--engine", engine]
    try:
        assert (
            labctl([*base, "up", *common, "--manifests", str(rendered), "--model-load-s", "0.2"])
            == 0
        )
        out = capsys.readouterr().out
        assert "gateway: http://127.0.0.1:" in out and "group vllm-us-west-2b-0" in out
        assert labctl([*base, "status", *common, "--json"]) == 0
        assert '"ready_replicas": 1' in capsys.readouterr().out
        assert (
            labctl([*base, "fail", *common, "--group", "vllm-us-west-2b-0", "--mode", "unhealthy"])
            == 0
        )
        assert labctl([*base, "fail", *common, "--zone", "nowhere"]) != 0
        err = capsys.readouterr().err
        assert "unknown zone 'nowhere'" in err and "Traceback" not in err
        assert labctl([*base, "restore", *common, "--group", "vllm-us-west-2b-0"]) == 0
    finally:
        assert labctl([*base, "down", *common]) == 0
    assert labctl([*base, "status", *common]) != 0
    assert "no twin running" in capsys.readouterr().err


def test_changed_manifests_apply_live(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", WEIGHTS, replicas=1)
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, model_load_s=0.2, time_scale=0.2)
    try:
        twin.up(rendered, timeout_s=60)
        controller = twin._state()["controller"]["pid"]
        # a participant edits the route (weight 0 for 2b) and the replicas, and re-renders
        write_rendered(rendered, {"us-west-2a": 1, "us-west-2b": 0}, replicas=2)
        status = twin.up(rendered, timeout_s=60).set_index("lws")
        assert twin._state()["controller"]["pid"] == controller  # applied, not restarted
        assert list(status["ready_replicas"]) == [2, 2]
        assert list(status["weight"]) == [1, 0]
        results = asyncio.run(send_requests(twin.endpoints().gateway_url, 60, concurrency=4))
        assert all(r["status"] == 200 for r in results)
        assert {r["zone"] for r in results} == {"us-west-2a"}
        assert {r["group"] for r in results} == {"vllm-us-west-2a-0", "vllm-us-west-2a-1"}
        assert "applied" in set(twin.events()["kind"])

        # HAProxy dies: the controller starts it again on the same ports
        haproxy = next(p for p in twin._state()["processes"] if p["role"] == "haproxy")
        os.kill(int(haproxy["pid"]), signal.SIGKILL)
        wait_for(
            lambda: [
                r["status"]
                for r in asyncio.run(send_requests(twin.endpoints().gateway_url, 4, concurrency=1))
            ],
            lambda statuses: all(s == 200 for s in statuses),
            "the restarted HAProxy to serve 4 requests in a row",
            timeout_s=15,
        )
        assert "haproxy-restarted" in set(twin.events()["kind"])
    finally:
        twin.down()


def test_twin_up_without_haproxy_names_it_and_the_install_command(tmp_path: Path) -> None:
    env = {**os.environ, "LAB_HAPROXY": str(tmp_path / "no-such-haproxy")}
    done = subprocess.run(
        [sys.executable, "-m", "labutils.cli", "twin", "up", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "haproxy not found" in lines[0] and "apt-get install -y haproxy" in lines[0]
    assert not (tmp_path / "s" / "state.json").exists()  # nothing was started
