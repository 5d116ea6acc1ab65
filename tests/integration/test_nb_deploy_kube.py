"""Notebook 01 + 06 calls on the EKS path, against the stateful fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKube

from labutils.config import LabConfig
from labutils.lessons import n01_deploy as deploy
from labutils.lessons import n06_cleanup as cleanup
from labutils.manifests import plan, render
from labutils.targets import rollout as rollouts
from labutils.targets.eks import EksBackend

ZONES = ("us-west-2a", "us-west-2b")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKube]:
    with FakeKube(tmp_path, zones=ZONES, ready_delay_s=0.3) as server:
        yield server


def _rendered(tmp_path: Path) -> Path:
    out = tmp_path / "rendered"
    render(LabConfig(zones=ZONES, replicas=1), out)
    # kinds the fake API server does not serve (Karpenter, PVCs) and the monitoring namespace
    for path in [*out.glob("zones/*/karpenter.yaml"), *out.glob("zones/*/storage.yaml"),
                 out / "monitoring" / "prometheus-adapter-rules.yaml"]:  # fmt: skip
        path.unlink()
    return out


@pytest.mark.timeout(60)
def test_watch_apply_checks_and_verified_reset_on_the_eks_path(
    kube: FakeKube, tmp_path: Path
) -> None:
    rendered = _rendered(tmp_path)
    eks = EksBackend(kube.write_kubeconfig(), config=LabConfig(zones=ZONES), poll_s=0.05,
                     cache_dir=tmp_path / "discovery")  # fmt: skip
    rollout = rollouts.watch_apply(eks, rendered, timeout_s=30, poll_s=0.05)
    assert rollout.target == "eks"
    assert sorted(rollout.groups["group"]) == [f"vllm-{z}-0" for z in ZONES]
    # the fake controller marks pods Ready ready_delay_s after creating them
    assert (rollout.to_frame()["time_to_ready_s"] >= 0.2).all()
    deploy.check_available(eks.status())
    pods = eks.groups()
    deploy.check_group_count(rollout, rendered, pods)
    deploy.check_leader_only_service(plan.service_selection(rendered, pods))

    before = cleanup.snapshot(eks)
    kinds = {kind for _, kind, _ in before.objects}
    assert {"LeaderWorkerSet", "Service", "HTTPRoute", "HorizontalPodAutoscaler"} <= kinds
    eks.reset(yes=True, timeout_s=20)
    verified = cleanup.check_clean(cleanup.verify_clean(eks, before), before)
    assert set(verified["now"]) == {"deleted"}
