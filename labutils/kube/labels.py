"""Kubernetes vocabulary the lab relies on, defined once: label keys, resource names, kinds.

Sources: well-known labels (https://kubernetes.io/docs/reference/labels-annotations-taints/),
LeaderWorkerSet's labels (sigs.k8s.io/lws ``api/leaderworkerset/v1/leaderworkerset_types.go``),
the NVIDIA device plugin's extended resource ``nvidia.com/gpu``
(https://github.com/NVIDIA/k8s-device-plugin).
"""

from __future__ import annotations

__all__ = [
    "GPU_RESOURCE",
    "INSTANCE_TYPE_LABEL",
    "INSTANCE_TYPE_LABELS",
    "LAB_LABEL",
    "LAB_NAME",
    "LAB_SELECTOR",
    "LWS_GROUP_INDEX_LABEL",
    "LWS_LABEL_PREFIX",
    "LWS_NAME_LABEL",
    "LWS_WORKER_INDEX_LABEL",
    "NODE_ZONE_LABEL",
    "ZONE_LABEL",
]

# Every object the lab creates carries this label; resets select by it and nothing else.
LAB_LABEL = "app.kubernetes.io/part-of"
LAB_NAME = "vllm-lws-lab"
LAB_SELECTOR = f"{LAB_LABEL}={LAB_NAME}"
# The lab's own zone label on its per-zone objects (LWS, Service, HPA, NodePool).
ZONE_LABEL = "vllm-lws-lab.io/zone"
# Labels LWS puts on every pod of a group.
LWS_LABEL_PREFIX = "leaderworkerset.sigs.k8s.io/"
LWS_NAME_LABEL = LWS_LABEL_PREFIX + "name"
LWS_GROUP_INDEX_LABEL = LWS_LABEL_PREFIX + "group-index"
LWS_WORKER_INDEX_LABEL = LWS_LABEL_PREFIX + "worker-index"
# Node labels set by the kubelet / cloud provider.
NODE_ZONE_LABEL = "topology.kubernetes.io/zone"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
INSTANCE_TYPE_LABELS = (INSTANCE_TYPE_LABEL, "beta.kubernetes.io/instance-type")
GPU_RESOURCE = "nvidia.com/gpu"
