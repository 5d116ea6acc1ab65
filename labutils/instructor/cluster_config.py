"""``labctl instructor cluster-config``: the eksctl ``ClusterConfig`` the lab needs, from lab.yaml.

Based on Karpenter's own "Getting Started with Karpenter" cluster (aws/karpenter-provider-aws
v1.14.1, ``website/content/en/v1.13/getting-started/getting-started-with-karpenter/scripts/
step02-create-cluster.sh``: the ``karpenter.sh/discovery`` tag, EKS Pod Identity for the
controller, the node role mapping), with what the lab adds: its zones and VPC CIDR, a NAT
gateway per zone, the VPC CNI add-on with network policy enforcement (``enableNetworkPolicy``,
AWS docs "Configure your cluster for Kubernetes network policies"), IRSA service accounts for
the AWS Load Balancer Controller and the EFS CSI driver (eksctl ``wellKnownPolicies``), an
access entry for the instructor, and a system node group for the controllers and the
participants' JupyterLabs. GPU nodes are Karpenter's (the rendered NodePools), not eksctl's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from labutils.config import LabConfig
from labutils.instructor.plan import JUPYTER_CPU, SYSTEM_NODE_VCPUS, load_addons
from labutils.manifests.settings import cluster_settings

__all__ = ["KARPENTER_POLICIES", "cluster_config", "prerequisite_commands", "write_cluster_config"]

# The controller policies Karpenter's CloudFormation template creates (getting started).
KARPENTER_POLICIES = (
    "KarpenterControllerNodeLifecyclePolicy",
    "KarpenterControllerIAMIntegrationPolicy",
    "KarpenterControllerEKSIntegrationPolicy",
    "KarpenterControllerInterruptionPolicy",
    "KarpenterControllerResourceDiscoveryPolicy",
    "KarpenterControllerZonalShiftPolicy",
)
_PART_OF = {"app.kubernetes.io/part-of": "vllm-lws-lab"}


def cluster_config(cfg: LabConfig, *, participants: int | None = None) -> dict[str, Any]:
    """The eksctl ``ClusterConfig`` (``eksctl.io/v1alpha5``) for ``cfg`` as a dict."""
    st = cluster_settings(cfg)
    name = cfg.cluster_name
    room = participants or st.participant_count
    system_nodes = max(2, math.ceil(room * JUPYTER_CPU / (SYSTEM_NODE_VCPUS - 1)))
    account = "${AWS_ACCOUNT_ID}"
    policies = [f"arn:aws:iam::{account}:policy/{p}-{name}" for p in KARPENTER_POLICIES]
    config: dict[str, Any] = {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {
            "name": name,
            "region": st.region,
            "version": st.kubernetes_version,
            # Karpenter finds the subnets and security groups by this tag (EC2NodeClass).
            "tags": {"karpenter.sh/discovery": name, **_PART_OF},
        },
        "availabilityZones": list(cfg.zones),
        "vpc": {
            "cidr": st.vpc_cidr,
            "nat": {"gateway": st.nat_gateway},
            "clusterEndpoints": {"publicAccess": True, "privateAccess": True},
        },
        "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"},
        "iam": {
            "withOIDC": True,
            "serviceAccounts": [
                {
                    "metadata": {
                        "name": "aws-load-balancer-controller",
                        "namespace": "kube-system",
                    },
                    "wellKnownPolicies": {"awsLoadBalancerController": True},
                },
                {
                    "metadata": {"name": "efs-csi-controller-sa", "namespace": "kube-system"},
                    "wellKnownPolicies": {"efsCSIController": True},
                },
            ],
            "podIdentityAssociations": [
                {
                    "namespace": load_addons()["addons"]["karpenter"]["namespace"],
                    "serviceAccountName": "karpenter",
                    "roleName": f"{name}-karpenter",
                    "permissionPolicyARNs": policies,
                }
            ],
        },
        "iamIdentityMappings": [
            {
                "arn": f"arn:aws:iam::{account}:role/KarpenterNodeRole-{name}",
                "username": "system:node:{{EC2PrivateDNSName}}",
                "groups": ["system:bootstrappers", "system:nodes"],
            }
        ],
        "addons": [
            {
                "name": "vpc-cni",
                # NetworkPolicies are enforced only with this (the lab's default-deny).
                "configurationValues": '{"enableNetworkPolicy": "true"}',
            },
            {"name": "eks-pod-identity-agent"},
            {"name": "coredns"},
            {"name": "kube-proxy"},
        ],
        "managedNodeGroups": [
            {
                "name": "system",
                "instanceType": "m6i.2xlarge",
                "amiFamily": "AmazonLinux2023",
                "privateNetworking": True,
                "minSize": 2,
                "desiredCapacity": system_nodes,
                "maxSize": system_nodes + 2,
                "labels": {"vllm-lws-lab.io/role": "system"},
            }
        ],
    }
    if st.instructor_arn:
        config["accessConfig"]["accessEntries"] = [
            {
                "principalARN": st.instructor_arn,
                "accessPolicies": [
                    {
                        "policyARN": "arn:aws:eks::aws:cluster-access-policy/"
                        "AmazonEKSClusterAdminPolicy",
                        "accessScope": {"type": "cluster"},
                    }
                ],
            }
        ]
    return config


def prerequisite_commands(cfg: LabConfig) -> list[str]:
    """What runs before ``eksctl create cluster``: Karpenter's IAM (CloudFormation)."""
    version = load_addons()["addons"]["karpenter"]["version"]
    template = (
        f"https://raw.githubusercontent.com/aws/karpenter-provider-aws/v{version}/website/"
        "content/en/preview/getting-started/getting-started-with-karpenter/cloudformation.yaml"
    )
    return [
        "export AWS_ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)",
        f'curl -fsSL {template} > "$TMPDIR/karpenter-cfn.yaml"',
        f"aws cloudformation deploy --stack-name Karpenter-{cfg.cluster_name} "
        f'--template-file "$TMPDIR/karpenter-cfn.yaml" --capabilities CAPABILITY_NAMED_IAM '
        f"--parameter-overrides ClusterName={cfg.cluster_name}",
    ]


def write_cluster_config(
    cfg: LabConfig, out: str | Path, *, participants: int | None = None
) -> Path:
    """Write the ClusterConfig to ``out`` (``${AWS_ACCOUNT_ID}`` left for ``envsubst``)."""
    path = Path(out)
    header = (
        "# Rendered by `labctl instructor cluster-config` from manifests/lab.yaml.\n"
        "# First: Karpenter's IAM (labctl instructor cluster-config prints the commands), then\n"
        f"#   envsubst < {path.name} | eksctl create cluster -f -\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(cluster_config(cfg, participants=participants), sort_keys=False)
    path.write_text(header + body)
    return path
