"""checkov on freshly rendered manifests: 0 failures outside the reasoned allow-list.

checkov is a local, offline tool (``--skip-download``); these tests need no network. They are
skipped when checkov is not installed (``make setup`` puts it in ``.venv-tools``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from labutils.config import project_root
from labutils.errors import ConfigError, LabError
from labutils.manifests import render
from labutils.security import (
    AllowEntry,
    checkov_path,
    load_allowlist,
    objects_for_scan,
    run_checkov,
)


def _have_checkov() -> bool:
    try:
        checkov_path()
    except LabError:
        return False
    return True


needs_checkov = pytest.mark.skipif(
    not _have_checkov(), reason="checkov not installed (make setup, or set LAB_CHECKOV)"
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(out_dir=out)
    return out


def test_allowlist_entries_have_reasons_and_are_narrow() -> None:
    allow = load_allowlist()
    assert allow, "manifests/checkov-allowlist.yaml is missing"
    for entry in allow:
        assert len(entry.reason) > 60, f"{entry.check}: give a real reason"
    by_check = {e.check: e for e in allow}
    # Probes are allowed on headless workers only; the leader must keep its probes.
    assert by_check["CKV_K8S_8"].covers("CKV_K8S_8", "Pod.vllm-lab.vllm-us-west-2a-worker")
    assert not by_check["CKV_K8S_8"].covers("CKV_K8S_8", "Pod.vllm-lab.vllm-us-west-2a-leader")
    # Secrets as env are allowed where vLLM needs the API key (leader), not on workers.
    assert not by_check["CKV_K8S_35"].covers("CKV_K8S_35", "Pod.vllm-lab.vllm-us-west-2a-worker")


def test_allowlist_without_reason_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "allow.yaml"
    bad.write_text("allow:\n  - check: CKV_K8S_43\n")
    with pytest.raises(ConfigError, match=r"allow\[0\] needs both 'check' and 'reason'"):
        load_allowlist(bad)


def test_lws_templates_are_scanned_as_pods(rendered: Path) -> None:
    from labutils.manifests import load_objects

    pods = [
        o for o in objects_for_scan(o.data for o in load_objects(rendered)) if o["kind"] == "Pod"
    ]
    names = sorted(p["metadata"]["name"] for p in pods)
    assert names == sorted(
        f"vllm-{z}-{role}"
        for z in ("us-west-2a", "us-west-2b", "us-west-2c")
        for role in ("leader", "worker")
    )


@needs_checkov
def test_rendered_manifests_have_no_failures_outside_the_allowlist(rendered: Path) -> None:
    report = run_checkov(rendered)
    assert report.passed > 100
    assert not report.failures, report.to_frame().to_string()
    # Every allow-list entry is still needed (otherwise delete it).
    used = {f["check_id"] for f in report.allowed}
    assert used == {e.check for e in load_allowlist()}


@needs_checkov
def test_seed_manifests_fail_the_same_scan_through_the_cli(data_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "labutils.cli", "scan", str(data_dir / "seed_manifests")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project_root(),
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # The old lab: root containers, no securityContext, no NetworkPolicy.
    for check in ("CKV_K8S_20", "CKV_K8S_23", "CKV2_K8S_6"):
        assert check in proc.stdout
    failed = int(re.search(r"(\d+) failed", proc.stdout).group(1))  # type: ignore[union-attr]
    assert failed >= 20


def test_allow_entry_glob() -> None:
    entry = AllowEntry("CKV_K8S_9", "headless workers serve no port", ("Pod.*-worker",))
    assert entry.covers("CKV_K8S_9", "Pod.ns.vllm-a-worker")
    assert not entry.covers("CKV_K8S_8", "Pod.ns.vllm-a-worker")
