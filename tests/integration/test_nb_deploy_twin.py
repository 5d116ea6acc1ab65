"""Notebook 01 + 06 flow on a real (small) twin: watched apply, first requests, checks, reset."""

from __future__ import annotations

from pathlib import Path

import pytest

from labutils.config import LabConfig
from labutils.lessons import n01_deploy as deploy
from labutils.lessons import n06_cleanup as cleanup
from labutils.manifests import plan, render
from labutils.targets import rollout as rollouts
from labutils.targets.twin import TwinBackend

ZONES = ("us-west-2a", "us-west-2b")


@pytest.mark.timeout(120)
def test_apply_watch_request_and_verified_reset(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    render(LabConfig(zones=ZONES, replicas=1), rendered)
    twin = TwinBackend(tmp_path / "state", model_load_s=0.3, time_scale=0.2)
    try:
        rollout = rollouts.watch_apply(twin, rendered, timeout_s=90, poll_s=0.1)
        frame = rollout.to_frame()
        assert sorted(frame["group"]) == [f"vllm-{z}-0" for z in ZONES]
        # each group became ready after it was first seen, and within the whole rollout
        assert (frame["time_to_ready_s"] >= 0).all()
        assert (frame["ready_s"] <= rollout.total_s + 1e-6).all()
        deploy.check_available(twin.status())
        pods = twin.groups()
        deploy.check_group_count(rollout, rendered, pods)
        deploy.check_leader_only_service(plan.service_selection(rendered, pods))

        replies = deploy.first_requests(twin, 4, max_tokens=4)
        assert (replies["status"] == 200).all()
        assert set(replies["zone"]) <= set(ZONES) and replies["zone"].ne("").all()
        served = zip(replies["zone"], replies["group"], strict=True)
        assert all(group.startswith(f"vllm-{zone}-") for zone, group in served)
        assert replies["simulated"].all() and set(replies["simulated_gpu"]) == {"a10g"}
        assert (replies["output_tokens"] == 4).all()

        before = cleanup.snapshot(twin)
        # controller, haproxy, prometheus, engines
        assert len(before.processes) == 1 + 1 + 1 + len(ZONES)
        assert before.ports
        twin.reset(yes=True)
        verified = cleanup.check_clean(cleanup.verify_clean(twin, before), before)
        assert verified["gone"].all()
        assert twin.leftovers() == {"pids": [], "ports": []}
    finally:
        twin.down()
