"""``labctl twin up --engine vllm``: the local twin, unchanged, in front of a real vLLM.

One zone with one real replica (the cheapest real twin): the gateway routes to it and names
it, the backend's metrics scrape reads vLLM's own families, and ``down`` leaves nothing behind.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from labutils.config import LabConfig
from labutils.manifests.render import render
from labutils.realengine import RealEngineEnv, TinyModel
from labutils.realengine.contract import metric_families
from labutils.targets.twin.backend import TwinBackend

pytestmark = pytest.mark.contract


def test_twin_serves_through_the_gateway_with_a_real_engine(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vllm_env: RealEngineEnv,
    tiny_model: TinyModel,
) -> None:
    monkeypatch.setenv("LAB_TINY_MODEL_DIR", str(tiny_model.path.parent))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # its own replica registry and engine logs
    config = LabConfig(zones=("us-west-2a",), replicas=1, min_replicas=1, max_replicas=1)
    rendered = tmp_path / "rendered"
    render(config, rendered)
    twin = TwinBackend(tmp_path / "state", engine="vllm", sync_period_s=600)
    engine_procs: list[psutil.Process] = []
    try:
        started = time.monotonic()
        twin.up(rendered, timeout_s=300)
        print(f"\ntwin with 1 real engine ready after {time.monotonic() - started:.1f} s")
        ends = twin.endpoints()
        body = json.dumps({"model": ends.model, "prompt": "hello", "max_tokens": 4}).encode()
        request = urllib.request.Request(
            f"{ends.gateway_url}/v1/completions",
            data=body,
            headers={"content-type": "application/json", **ends.headers},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.headers["x-lab-zone"] == "us-west-2a"
            assert resp.headers["x-lab-group"] == "vllm-us-west-2a-0"
            answer = json.loads(resp.read())
        assert answer["usage"]["completion_tokens"] == 4
        assert "x-lab-simulated" not in resp.headers
        scrapes = twin.scrape_metrics()
        assert [s.error for s in scrapes] == [None]
        families = metric_families(scrapes[0].text)
        assert "vllm:time_to_first_token_seconds" in families
        assert "lab_sim_info" not in families  # a real engine, not the simulator
        # The engines the twin started: its leaders' processes and everything under them.
        leaders = [psutil.Process(int(pid)) for pid in twin.groups()["pid"].dropna()]
        engine_procs = [p for leader in leaders for p in (leader, *leader.children(True))]
        assert any("vllm.entrypoints" in " ".join(p.cmdline()) for p in engine_procs)
    finally:
        twin.down()
    leftovers = twin.leftovers()
    assert not any(leftovers.values()), leftovers
    _, alive = psutil.wait_procs(engine_procs, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
