"""Local preflight: each check can fail with a fix; stale twin state is found by real PIDs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from labutils.config import project_root
from labutils.errors import ConfigError
from labutils.lessons import n00_preflight as preflight
from labutils.targets import preflight as target_preflight
from labutils.targets.twin.state import record_of


def _by_check(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("check")


def test_local_preflight_passes_here(tmp_path: Path) -> None:
    checks = _by_check(target_preflight.local_preflight(state_dir=tmp_path / "state"))
    assert list(checks.columns) == ["ok", "detail", "fix"]
    assert checks.loc["Python", "ok"]
    assert checks.loc["state dir writable", "ok"]
    assert checks.loc["twin in this state dir", "detail"] == "not running, no state"
    assert checks.loc["manifests render and validate", "ok"], checks.loc[
        "manifests render and validate", "detail"
    ]
    if shutil.which("haproxy"):
        version = target_preflight.haproxy_version()
        assert version is not None and version[:2] >= target_preflight.MIN_HAPROXY
    prometheus = target_preflight.prometheus_version()
    assert checks.loc["Prometheus", "ok"] == (prometheus is not None)
    if prometheus is not None:
        assert ".".join(map(str, prometheus)) in checks.loc["Prometheus", "detail"]


def test_prometheus_version_parses_the_server_banner(tmp_path: Path) -> None:
    # Debian 12's `prometheus --version` banner, and a binary that prints no version
    banner = tmp_path / "prometheus"
    banner.write_text(
        "#!/bin/sh\n"
        "echo 'prometheus, version 2.42.0+ds (branch: debian/sid, revision: 2.42.0+ds-5)'\n"
    )
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexit 0\n")
    for script in (banner, silent):
        script.chmod(0o755)
    assert target_preflight.prometheus_version(str(banner)) == (2, 42, 0)
    assert target_preflight.prometheus_version(str(silent)) is None
    assert target_preflight.prometheus_version(str(tmp_path / "missing")) is None


def test_stale_twin_state_fails_with_the_reset_command(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # a crashed twin: its controller is gone, one recorded engine still runs
        state = {"controller": {"pid": 999_999, "create_time": 1.0, "role": "controller"},
                 "processes": [record_of(proc.pid, "engine")]}  # fmt: skip
        (tmp_path / "state.json").write_text(json.dumps(state))
        checks = _by_check(target_preflight.local_preflight(state_dir=tmp_path))
        row = checks.loc["twin in this state dir"]
        assert not row["ok"] and str(proc.pid) in row["detail"]
        assert "labctl reset --target local --yes" in row["fix"]
        with pytest.raises(ConfigError, match="twin in this state dir: stale"):
            preflight.check_preflight(checks.reset_index())
    finally:
        proc.kill()
        proc.wait()
    # once the process is gone the old state is harmless
    assert _by_check(target_preflight.local_preflight(state_dir=tmp_path)).loc[
        "twin in this state dir", "ok"
    ]


def test_unwritable_state_dir_and_broken_manifests_fail(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    source = tmp_path / "manifests"
    shutil.copytree(project_root() / "manifests", source)
    svc = source / "zone" / "service.yaml"  # the seed's mistake: the Service selects workers too
    svc.write_text(svc.read_text().replace('leaderworkerset.sigs.k8s.io/worker-index: "0"', ""))
    checks = _by_check(target_preflight.local_preflight(state_dir=blocker / "state", source=source))
    assert not checks.loc["state dir writable", "ok"]
    assert "LAB_STATE_DIR" in checks.loc["state dir writable", "fix"]
    assert "twin in this state dir" not in checks.index  # nothing to inspect there
    row = checks.loc["manifests render and validate"]
    assert not row["ok"] and "problem" in row["detail"] and "labctl validate" in row["fix"]


def test_check_preflight_needs_rows() -> None:
    with pytest.raises(ConfigError, match="no checks"):
        preflight.check_preflight(pd.DataFrame())
    ok = pd.DataFrame([{"check": "x", "ok": True, "detail": "", "fix": ""}])
    assert preflight.check_preflight(ok) is ok


def test_cli_preflight_and_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from labutils.cli import main

    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    code = main(["preflight", "--target", "local"])
    out = capsys.readouterr().out
    assert "manifests render and validate" in out and "state dir writable" in out
    tools = shutil.which("haproxy") and target_preflight.prometheus_version()
    assert code == (0 if tools else 1)
    assert main(["plan", "--out", str(tmp_path / "rendered")]) == 0
    out = capsys.readouterr().out
    assert "LeaderWorkerSet" in out and "vllm-us-west-2c-api" in out
    assert main(["plan", "--rendered", str(tmp_path / "missing")]) == 1
    assert "not a folder of rendered manifests" in capsys.readouterr().err
