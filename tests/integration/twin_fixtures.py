"""Hand-made rendered manifests for the twin's tests (the layout `labctl render` writes).

The monitoring objects are the lab's own (``manifests/monitoring/``: the PodMonitor and the
prometheus-adapter rules), copied as rendering copies them, so the twin's Prometheus and HPA
run on what the cluster gets.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

# A stand-in with a fixed token cadence and a request-header echo (for the header-filter and
# SSE tests); every other test runs the real simulator ("sim").
STUB_ENGINE = [sys.executable, str(Path(__file__).with_name("twin_stub_engine.py"))]
ENGINE = "sim"
# 8B on H100 keeps the simulated step time short, so tests stay fast on a loaded machine.
INSTANCE_TYPE = "p5.48xlarge"
ZONE_LABEL = "vllm-lws-lab.io/zone"
MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"

T = TypeVar("T")


def wait_for(
    observe: Callable[[], T], done: Callable[[T], bool], what: str, *, timeout_s: float = 30.0
) -> T:
    """Poll ``observe()`` until ``done`` holds for what it returned; return that observation.

    Tests wait for an observable state (a group ready again, a server DOWN in HAProxy, a
    process gone), never for a fixed time; the timeout only bounds a test that would hang, and
    its error names what was awaited and the last observation.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        seen = observe()
        if done(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                                 f"last seen: {seen!r}")  # fmt: skip
        time.sleep(0.05)


def zone_objects(zone: str, replicas: int, hpa: dict[str, Any] | None) -> list[dict[str, Any]]:
    lws = f"vllm-{zone}"
    labels = {"app.kubernetes.io/part-of": "vllm-lws-lab", ZONE_LABEL: zone}
    hc = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-"
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "metadata": {"name": lws, "namespace": "vllm-lab", "labels": labels},
            "spec": {
                "replicas": replicas,
                "leaderWorkerTemplate": {
                    "size": 2,
                    "leaderTemplate": {
                        # the labels and port the lab's LWS gives its leaders (the PodMonitor
                        # selects them by these)
                        "metadata": {"labels": {"app.kubernetes.io/name": "vllm",
                                                "app.kubernetes.io/component": "leader",
                                                ZONE_LABEL: zone}},
                        "spec": {
                            "nodeSelector": {"node.kubernetes.io/instance-type": INSTANCE_TYPE},
                            "containers": [
                                {
                                    "name": "vllm",
                                    "command": ["vllm", "serve"],
                                    "args": [
                                        "meta-llama/Llama-3.1-8B-Instruct",
                                        "--served-model-name", "llama-3.1-8b",
                                        "--tensor-parallel-size", "4",
                                        "--pipeline-parallel-size", "2",
                                        "--max-num-seqs", "4",
                                        "--max-model-len", "8192",
                                    ],
                                    "ports": [{"name": "http", "containerPort": 8000,
                                               "protocol": "TCP"}],
                                }
                            ],
                        }
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"{lws}-api",
                "labels": labels,
                "annotations": {
                    hc + "protocol": "http",
                    hc + "path": "/health",
                    hc + "interval": "5",
                    hc + "timeout": "2",
                    hc + "healthy-threshold": "2",
                    hc + "unhealthy-threshold": "2",
                    hc + "success-codes": "200",
                },
            },
            "spec": {"type": "LoadBalancer"},
        },
    ]  # fmt: skip
    if hpa is not None:
        objs.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": lws, "labels": labels},
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "leaderworkerset.x-k8s.io/v1",
                        "kind": "LeaderWorkerSet",
                        "name": lws,
                    },
                    **hpa,
                },
            }
        )
    return objs


def route(weights: dict[str, int], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
        "backendRefs": [
            {"kind": "Service", "name": f"vllm-{z}-api", "port": 80, "weight": w}
            for z, w in weights.items()
        ],
    }
    if headers:
        rule["filters"] = [{"type": "RequestHeaderModifier", "requestHeaderModifier": headers}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "vllm", "labels": {"app.kubernetes.io/part-of": "vllm-lws-lab"}},
        "spec": {"parentRefs": [{"name": "vllm-gateway"}], "rules": [rule]},
    }


def write_rendered(
    root: Path,
    weights: dict[str, int],
    replicas: int = 1,
    hpa: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    monitoring: bool = True,
) -> Path:
    """Write zones/<zone>/*.yaml, gateway/httproute.yaml and monitoring/ under ``root``."""
    for zone in weights:
        folder = root / "zones" / zone
        folder.mkdir(parents=True, exist_ok=True)
        objs = zone_objects(zone, replicas, hpa)
        (folder / "lws.yaml").write_text(yaml.safe_dump(objs[0]))
        (folder / "service.yaml").write_text(yaml.safe_dump(objs[1]))
        if hpa is not None:
            (folder / "hpa.yaml").write_text(yaml.safe_dump(objs[2]))
    (root / "gateway").mkdir(parents=True, exist_ok=True)
    (root / "gateway" / "httproute.yaml").write_text(yaml.safe_dump(route(weights, headers)))
    if monitoring:
        (root / "monitoring").mkdir(parents=True, exist_ok=True)
        for source in sorted(MONITORING.glob("*.yaml")):
            shutil.copy(source, root / "monitoring" / source.name)
    return root
