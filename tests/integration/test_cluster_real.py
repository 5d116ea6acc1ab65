"""The same flow against a real cluster (``LAB_KUBECONFIG``); skipped without one.

Uses its own namespace ``vllm-lab-ci`` (created, labelled as the lab's, deleted at the end)
and one zone of one group, so it needs a single GPU node with the LWS CRD installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube.lab_objects import lab_objects

from labutils.config import LabConfig
from labutils.targets.eks import EksBackend, preflight

pytestmark = pytest.mark.cluster

NAMESPACE = "vllm-lab-ci"
ZONE = os.environ.get("LAB_ZONE", "us-west-2a")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[EksBackend]:
    eks = EksBackend(
        os.environ["LAB_KUBECONFIG"],
        os.environ.get("LAB_CONTEXT"),
        namespace=NAMESPACE,
        config=LabConfig(zones=(ZONE,), namespace=NAMESPACE),
        cache_dir=tmp_path,
    )
    namespace = lab_objects((ZONE,))[0]
    namespace["metadata"]["name"] = NAMESPACE
    eks.apply(objects=[namespace], wait=False)
    try:
        yield eks
    finally:
        eks.reset(yes=True, timeout_s=600)
        eks.conn.resource("v1", "Namespace").delete(name=NAMESPACE)


def test_real_cluster_flow(backend: EksBackend) -> None:
    checks = preflight(os.environ["LAB_KUBECONFIG"], os.environ.get("LAB_CONTEXT"))
    assert bool(checks.set_index("check").loc["API server", "ok"])
    backend.apply(objects=lab_objects((ZONE,), size=1)[1:], timeout_s=1800)
    assert backend.status()["available"].all()
    assert (backend.groups()["role"] == "leader").sum() == 1
    backend.scale(f"vllm-{ZONE}", 1)
    assert backend.endpoints().groups
    scrapes = backend.scrape_metrics()
    assert scrapes and all(s.error is None and "vllm:" in s.text for s in scrapes)
    assert not backend.reset(yes=True, timeout_s=600).empty
    assert backend.reset(yes=True).empty
