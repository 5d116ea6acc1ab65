"""The twin's logs never carry a credential, even when the environment and requests hold one.

The twin runs with planted keys in its environment (VLLM_API_KEY, HF_TOKEN, LAB_API_KEY, which
its engines inherit) and serves requests with a planted bearer token, good and bad (also from
`labctl loadtest`, whose JSON results are scanned too); then its
whole state dir (logs, events, state) is scanned. A copy of a log with the key appended proves
the scan would have caught a leak.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from twin_fixtures import ENGINE, write_rendered
from twin_gateway_client import send_requests

from labutils.config import project_root
from labutils.secretscan import scan_secrets, scan_text
from labutils.targets.twin import TwinBackend

_KEY = "sk-" + "lab" + "Q7x9Lm2Pz4Kw8Rt6Vb3Nc5Hd1"
_HF = "hf_" + "Q7x9Lm2Pz4Kw8Rt6Vb3Nc5Hd1Jf0Gs" + "xyz"


def test_twin_state_dir_has_no_keys_after_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", _KEY)
    monkeypatch.setenv("HF_TOKEN", _HF)
    monkeypatch.setenv("LAB_API_KEY", _KEY)
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1}, replicas=1)
    state = tmp_path / "state"
    twin = TwinBackend(state, engine=ENGINE, model_load_s=0.2, time_scale=0.2)
    try:
        twin.up(rendered, timeout_s=60)
        url = twin.endpoints().gateway_url
        good = asyncio.run(
            send_requests(url, 6, concurrency=2, max_tokens=4,
                          headers={"Authorization": f"Bearer {_KEY}"})
        )  # fmt: skip
        bad = asyncio.run(
            send_requests(url, 2, concurrency=1, max_tokens=4,
                          headers={"Authorization": f"Bearer {_KEY}x"})
        )  # fmt: skip
        # The load tester's results (errors included) must not carry the key it sent.
        reports = []
        for name, key in (("good", _KEY), ("bad", _KEY + "x")):
            reports.append(tmp_path / f"loadtest-{name}.json")
            proc = subprocess.run(
                [sys.executable, "-m", "labutils.cli", "loadtest", "--url", url, "--model",
                 "llama-3.1-8b", "--rate", "20", "--requests", "3", "--output-tokens", "4",
                 "--no-progress", "--out", str(reports[-1])],
                capture_output=True, text=True, timeout=120, check=False,
                env={**os.environ, "LAB_API_KEY": key}, cwd=project_root(),
            )  # fmt: skip
            assert proc.returncode == (0 if name == "good" else 1), proc.stderr
            assert not scan_text(proc.stdout + proc.stderr)
    finally:
        twin.down()
    assert {r["status"] for r in good} == {200}
    assert {r["status"] for r in bad} == {401}  # the engines did read the planted key
    logs = sorted((state / "logs").glob("*"))
    assert logs, "the twin wrote no logs"
    assert "401" in reports[1].read_text()  # the bad key was refused and recorded
    assert not scan_secrets(reports).findings
    result = scan_secrets([state])
    assert result.files_scanned >= len(logs)
    assert not result.findings, "\n".join(map(str, result.findings))
    # Self-test on the real log: the same scan catches the key once it is in there.
    leaked = tmp_path / "leaked.log"
    leaked.write_text(logs[0].read_text(errors="replace") + f"\nAuthorization: Bearer {_KEY}\n")
    kinds = {f.kind for f in scan_secrets([leaked]).findings}
    assert {"bearer-token", "openai-key"} <= kinds
