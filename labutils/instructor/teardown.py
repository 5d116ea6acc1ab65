"""``labctl instructor teardown``: remove the workshop without stranding cloud resources.

Order matters because Kubernetes objects own AWS resources through controllers: a LoadBalancer
Service's NLB is deleted by the AWS Load Balancer Controller (its finalizer holds the Service
until the NLB is gone), Karpenter terminates the instances of the NodeClaims it launched, the
EFS CSI driver deletes the access points of ``reclaimPolicy: Delete`` volumes. Uninstall a
controller first and its resources outlive the cluster (and keep billing). So:

1. the lab's objects in every lab namespace, then the participants' namespaces;
2. wait until no Service of type LoadBalancer is left (the NLBs are gone);
3. the Karpenter NodePools, then wait until every NodeClaim is gone (GPU instances ended);
4. the lab namespace, then wait until no volume of the model-cache StorageClass is left;
5. the add-ons, in reverse install order (GatewayClass/EnvoyProxy first);
6. the EFS file system, the cluster (``eksctl delete cluster``: node group, NAT gateways, VPC),
   Karpenter's IAM stack.

Dry run by default (the commands are printed); ``--yes`` runs them with bash, stopping at the
first failure, so a rerun continues where it stopped (every step is idempotent).
"""

from __future__ import annotations

import shlex
from typing import Any

from labutils.config import LabConfig
from labutils.instructor.addons import ENVOY_PROXY, AddonStep, apply_steps
from labutils.manifests.settings import cluster_settings

__all__ = ["teardown_steps"]

_WAIT_S = 1800


def _wait_until_none(what: str, count_cmd: str, timeout_s: int = _WAIT_S) -> str:
    return (
        f"for i in $(seq 1 {timeout_s // 10}); do n=$({count_cmd} | grep -c . || true); "
        f'[ "$n" = 0 ] && break; echo "waiting for {what}: $n left"; sleep 10; done; '
        f'[ "$n" = 0 ] || {{ echo "{what} still there after {timeout_s} s" >&2; exit 1; }}'
    )


def teardown_steps(cfg: LabConfig) -> list[AddonStep]:
    """The teardown, in order (see the module docstring)."""
    st = cluster_settings(cfg)
    q = shlex.quote
    name, region = q(cfg.cluster_name), q(st.region)
    lb_services = (
        'kubectl get svc -A -o jsonpath=\'{range .items[?(@.spec.type=="LoadBalancer")]}'
        '{.metadata.namespace}/{.metadata.name}{"\\n"}{end}\''
    )
    cache_volumes = (
        "kubectl get pv -o jsonpath='{range .items[?(@.spec.storageClassName==\""
        f'{cfg.model_storage_class}")]}}{{.metadata.name}}{{"\\n"}}{{end}}\''
    )
    step = AddonStep
    return [
        step("lab objects and participants", "", "labctl reset / participants delete", (
            "labctl reset --target eks --all-participants --yes",
            "labctl participants delete --yes",
        ), tools=("labctl",)),
        step("NLBs gone", "", "AWS Load Balancer Controller finalizer on each Service", (
            _wait_until_none("LoadBalancer Services (NLBs)", lb_services),
        ), tools=("kubectl",)),
        step("GPU nodes gone", "", "Karpenter: NodeClaims own the instances", (
            "kubectl delete nodepools.karpenter.sh -l app.kubernetes.io/part-of=vllm-lws-lab "
            "--ignore-not-found",
            "kubectl delete ec2nodeclasses.karpenter.k8s.aws "
            "-l app.kubernetes.io/part-of=vllm-lws-lab --ignore-not-found",
            _wait_until_none("Karpenter NodeClaims", "kubectl get nodeclaims -o name"),
        ), tools=("kubectl",)),
        step("model caches gone", "", "EFS CSI driver deletes access points (reclaim Delete)", (
            f"kubectl delete namespace {q(cfg.namespace)} --ignore-not-found --wait",
            _wait_until_none(f"{cfg.model_storage_class} volumes", cache_volumes),
        ), tools=("kubectl",)),
        step("add-ons", "", "labutils/data/addons.yaml, reverse install order", (
            f"kubectl delete gatewayclass {q(cfg.gateway_class_name)} --ignore-not-found",
            f"kubectl delete envoyproxy -n {q(st.gateway_namespace)} {ENVOY_PROXY} "
            "--ignore-not-found",
            f"kubectl delete storageclass {q(cfg.model_storage_class)} --ignore-not-found",
            f"helm uninstall prometheus-adapter -n {q(st.monitoring_namespace)} --ignore-not-found",
            f"helm uninstall {q(st.monitoring_release)} -n {q(st.monitoring_namespace)} "
            "--ignore-not-found",
            "helm uninstall nvdp -n nvidia-device-plugin --ignore-not-found",
            "helm uninstall aws-efs-csi-driver -n kube-system --ignore-not-found",
            "helm uninstall aws-load-balancer-controller -n kube-system --ignore-not-found",
            f"helm uninstall eg -n {q(st.gateway_namespace)} --ignore-not-found",
            "helm uninstall lws -n lws-system --ignore-not-found",
            "helm uninstall karpenter -n kube-system --ignore-not-found",
        ), tools=("kubectl", "helm")),
        step("EFS file system", "", "aws efs (mount targets first)", (
            (
                f"FS={q(st.efs_file_system_id)}; if [ -n \"$FS\" ]; then "
                f"for mt in $(aws efs describe-mount-targets --region {region} "
                "--file-system-id \"$FS\" --query 'MountTargets[].MountTargetId' --output text); "
                f"do aws efs delete-mount-target --region {region} --mount-target-id \"$mt\"; "
                "done; sleep 60; "
                f"aws efs delete-file-system --region {region} --file-system-id \"$FS\"; fi"
            ),
        ), tools=("aws",)),
        step("cluster", "", "eksctl delete cluster (node group, NAT gateways, VPC)", (
            f"eksctl delete cluster --name {name} --region {region} --wait",
        ), tools=("eksctl",)),
        step("Karpenter IAM", "", "Karpenter getting started: CloudFormation stack", (
            f"aws cloudformation delete-stack --region {region} --stack-name Karpenter-{name}",
            f"aws cloudformation wait stack-delete-complete --region {region} "
            f"--stack-name Karpenter-{name}",
        ), tools=("aws",)),
    ]  # fmt: skip


def run_teardown(cfg: LabConfig, **options: Any) -> list[str]:
    """Run :func:`teardown_steps` (see :func:`labutils.instructor.addons.apply_steps`)."""
    return apply_steps(teardown_steps(cfg), **options)
