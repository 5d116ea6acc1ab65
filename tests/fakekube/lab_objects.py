"""A small set of rendered-manifest look-alikes (names as in docs/contracts.md) for the tests."""

from __future__ import annotations

from typing import Any

PART_OF = {"app.kubernetes.io/part-of": "vllm-lws-lab"}
NAMESPACE = "vllm-lab"


def _zone_labels(zone: str) -> dict[str, str]:
    return {**PART_OF, "vllm-lws-lab.io/zone": zone}


def lab_objects(
    zones: tuple[str, ...] = ("us-west-2a", "us-west-2b"), *, replicas: int = 1, size: int = 2
) -> list[dict[str, Any]]:
    """Namespace, per-zone LWS + Service + HPA, Gateway and HTTPRoute, as rendering makes them."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": dict(PART_OF)},
        },
    ]
    for zone in zones:
        lws = f"vllm-{zone}"
        container = {
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.11.0",
            "command": ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"],
            "args": [
                "--served-model-name",
                "llama-3.1-8b",
                "--port",
                "8000",
                "--tensor-parallel-size",
                "1",
            ],
            "ports": [{"name": "http", "containerPort": 8000}],
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        }
        pod_spec = {
            "nodeSelector": {"topology.kubernetes.io/zone": zone},
            "containers": [container],
        }
        objects += [
            {
                "apiVersion": "leaderworkerset.x-k8s.io/v1",
                "kind": "LeaderWorkerSet",
                "metadata": {"name": lws, "labels": _zone_labels(zone)},
                "spec": {
                    "replicas": replicas,
                    "leaderWorkerTemplate": {
                        "size": size,
                        "restartPolicy": "RecreateGroupOnPodRestart",
                        "leaderTemplate": {
                            "metadata": {"labels": _zone_labels(zone)},
                            "spec": pod_spec,
                        },
                        "workerTemplate": {
                            "metadata": {"labels": _zone_labels(zone)},
                            "spec": {
                                **pod_spec,
                                "containers": [
                                    {
                                        **container,
                                        "command": ["ray", "start", "--block"],
                                        "args": [],
                                        "ports": [],
                                    }
                                ],
                            },
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{lws}-api", "labels": _zone_labels(zone)},
                "spec": {
                    "type": "ClusterIP",
                    "selector": {
                        "leaderworkerset.sigs.k8s.io/name": lws,
                        "leaderworkerset.sigs.k8s.io/worker-index": "0",
                    },
                    "ports": [{"name": "http", "port": 8000, "targetPort": 8000}],
                },
            },
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": lws, "labels": _zone_labels(zone)},
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "leaderworkerset.x-k8s.io/v1",
                        "kind": "LeaderWorkerSet",
                        "name": lws,
                    },
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "metrics": [
                        {
                            "type": "Pods",
                            "pods": {
                                "metric": {"name": "vllm_num_requests_waiting"},
                                "target": {"type": "AverageValue", "averageValue": "5"},
                            },
                        }
                    ],
                },
            },
        ]
    objects += [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "vllm-gateway", "labels": dict(PART_OF)},
            "spec": {
                "gatewayClassName": "aws-alb",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "vllm", "labels": dict(PART_OF)},
            "spec": {
                "parentRefs": [{"name": "vllm-gateway"}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": f"vllm-{z}-api", "port": 8000, "weight": 1} for z in zones
                        ]
                    }
                ],
            },
        },
    ]
    return objects
