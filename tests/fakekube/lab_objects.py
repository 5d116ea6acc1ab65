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


def install_addons(
    kube: Any,
    *,
    gateway_class: str = "eg",
    storage_class: str = "efs-sc",
    accepted: bool = True,
    nodepool_zones: tuple[str, ...] = (),
) -> None:
    """Store what `labctl instructor addons` leaves in a cluster: the GatewayClass (with the
    ``Accepted`` condition Envoy Gateway's controller sets), the EFS StorageClass, the NVIDIA
    device plugin DaemonSet, and Karpenter NodePools for ``nodepool_zones``."""
    kube.put("gateway.networking.k8s.io", "gatewayclasses", "", {
        "metadata": {"name": gateway_class},
        "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        "status": {"conditions": [{
            "type": "Accepted", "status": "True" if accepted else "False",
            "reason": "Accepted" if accepted else "InvalidParameters",
            "message": "Valid GatewayClass" if accepted else "EnvoyProxy not found",
        }]},
    })  # fmt: skip
    kube.put("storage.k8s.io", "storageclasses", "", {
        "metadata": {"name": storage_class}, "provisioner": "efs.csi.aws.com",
        "parameters": {"provisioningMode": "efs-ap", "uid": "10001", "gid": "10001"},
    })  # fmt: skip
    kube.put("", "namespaces", "", {"metadata": {"name": "nvidia-device-plugin"}})
    kube.put("apps", "daemonsets", "nvidia-device-plugin", {
        "metadata": {"name": "nvdp-nvidia-device-plugin",
                     "labels": {"app.kubernetes.io/name": "nvidia-device-plugin"}},
        "status": {"desiredNumberScheduled": 0, "numberReady": 0},
    })  # fmt: skip
    for zone in nodepool_zones:
        kube.put("karpenter.sh", "nodepools", "", {
            "metadata": {"name": f"vllm-gpu-{zone}", "labels": dict(PART_OF)},
            "spec": {"template": {"spec": {"requirements": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}]}},
                "limits": {"nvidia.com/gpu": "32"}},
        })  # fmt: skip


def lab_secrets(kube: Any, namespace: str = NAMESPACE) -> None:
    """The two Secrets the lab's pods read, with (fake) values."""
    for name, key in (("vllm-api-key", "api-key"), ("hf-token", "token")):
        kube.put("", "secrets", namespace, {
            "metadata": {"name": name}, "type": "Opaque",
            "data": {key: "bm90LWEtcmVhbC12YWx1ZQ=="},
        })  # fmt: skip
