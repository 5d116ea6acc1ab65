"""``labctl instructor addons``: install what the lab's manifests rely on, at pinned versions.

The versions come from ``labutils/data/addons.yaml`` only; each step's commands follow the
upstream installation docs named there. Besides the Helm charts, the lab creates three things
nobody else does, from ``lab.yaml``, so that the names the manifests use exist:

- the GatewayClass ``gateway_class_name`` (Envoy Gateway's Helm chart creates none; its
  quickstart does, which a cluster does not run) with an EnvoyProxy that makes the gateway's
  Service an internal NLB through the AWS Load Balancer Controller;
- the StorageClass ``model_storage_class`` (EFS CSI dynamic access points owned by uid/gid
  10001, the vLLM pods' user);
- the Prometheus the PodMonitor's ``release`` label selects (kube-prometheus-stack installed
  under ``monitoring.helm_release``), and prometheus-adapter with the lab's own rules
  (``manifests/monitoring/prometheus-adapter-rules.yaml``).

``--print`` shows every command; ``--apply`` runs them with ``helm``/``kubectl`` (and ``bash``)
from PATH, stopping at the first failure.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labutils.config import LabConfig, manifests_dir
from labutils.errors import ConfigError, LabError
from labutils.instructor.plan import load_addons
from labutils.manifests.loader import load_objects
from labutils.manifests.settings import cluster_settings
from labutils.metrics.addons import monitoring_addons

__all__ = [
    "ENVOY_PROXY",
    "AddonStep",
    "addon_objects",
    "addon_steps",
    "apply_steps",
    "format_steps",
]

ENVOY_PROXY = "lab-internal-nlb"
_GPU_PRESENT = "nvidia.com/gpu.present"


class ToolError(LabError):
    """A command-line tool the step needs is missing, or a step failed."""


@dataclass(frozen=True)
class AddonStep:
    """One add-on: its pinned version, where that comes from, and the shell commands."""

    name: str
    version: str
    source: str
    commands: tuple[str, ...]
    tools: tuple[str, ...] = ("helm",)
    objects: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def _lb_annotations(scheme: str = "internal") -> dict[str, str]:
    prefix = "service.beta.kubernetes.io/aws-load-balancer-"
    return {
        prefix + "type": "external",
        prefix + "nlb-target-type": "ip",
        prefix + "scheme": scheme,
    }


def addon_objects(cfg: LabConfig) -> list[dict[str, Any]]:
    """The objects the lab itself creates for its add-ons: EnvoyProxy, GatewayClass,
    StorageClass (validated against the vendored CRD schemas by the tests)."""
    st = cluster_settings(cfg)
    labels = {"app.kubernetes.io/part-of": "vllm-lws-lab"}
    efs_id = st.efs_file_system_id or "fs-REPLACE-ME"
    return [
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyProxy",
            "metadata": {"name": ENVOY_PROXY, "namespace": st.gateway_namespace, "labels": labels},
            "spec": {
                "provider": {
                    "type": "Kubernetes",
                    "kubernetes": {
                        # an internal NLB with pod (ip) targets: reachable from the VPC only
                        "envoyService": {"annotations": _lb_annotations()},
                    },
                }
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": cfg.gateway_class_name, "labels": labels},
            "spec": {
                "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                "parametersRef": {
                    "group": "gateway.envoyproxy.io",
                    "kind": "EnvoyProxy",
                    "name": ENVOY_PROXY,
                    "namespace": st.gateway_namespace,
                },
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": cfg.model_storage_class, "labels": labels},
            "provisioner": "efs.csi.aws.com",
            # aws-efs-csi-driver docs/parameters.md: dynamic access points; uid/gid own the
            # access point's root directory, so the pods' user 10001 can write the cache.
            "parameters": {
                "provisioningMode": "efs-ap",
                "fileSystemId": efs_id,
                "directoryPerms": "700",
                "uid": "10001",
                "gid": "10001",
                "basePath": f"/{cfg.cluster_name}",
            },
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
    ]


def _adapter_rules(source: Path) -> list[Any]:
    for obj in load_objects(source / "monitoring" / "prometheus-adapter-rules.yaml"):
        if obj.kind == "ConfigMap":
            config = yaml.safe_load((obj.data.get("data") or {}).get("config.yaml", "")) or {}
            return list(config.get("rules") or [])
    raise ConfigError(f"{source}/monitoring/prometheus-adapter-rules.yaml: no ConfigMap of rules")


def _heredoc(command: str, body: str) -> str:
    return f"{command} <<'EOF'\n{body.rstrip()}\nEOF"


def addon_steps(cfg: LabConfig, source: str | Path | None = None) -> list[AddonStep]:
    """Every add-on install, in order, with its pinned version and commands."""
    src = Path(source) if source else manifests_dir()
    st = cluster_settings(cfg)
    pins = load_addons()["addons"]
    name = cfg.cluster_name

    def pin(key: str) -> tuple[str, str]:
        return str(pins[key]["version"]), str(pins[key]["source"])

    q = shlex.quote
    steps: list[AddonStep] = []
    version, source_url = pin("karpenter")
    k = pins["karpenter"]
    steps.append(AddonStep("karpenter", version, source_url, (
        "helm registry logout public.ecr.aws || true",
        f"helm upgrade --install karpenter {k['chart']} --version {version} "
        f"--namespace {k['namespace']} --create-namespace "
        f"--set settings.clusterName={q(name)} --set settings.interruptionQueue={q(name)} "
        "--set controller.resources.requests.cpu=1 --set controller.resources.requests.memory=1Gi "
        "--set controller.resources.limits.cpu=1 --set controller.resources.limits.memory=1Gi "
        "--wait",
    )))  # fmt: skip
    version, source_url = pin("lws")
    lws = pins["lws"]
    steps.append(AddonStep("lws", version, source_url, (
        f"helm upgrade --install lws {lws['chart']} --version={version} "
        f"--namespace {lws['namespace']} --create-namespace --wait --timeout 300s",
    )))  # fmt: skip
    version, source_url = pin("envoy-gateway")
    eg = pins["envoy-gateway"]
    gw_api = pins["gateway-api"]
    steps.append(AddonStep(
        "gateway-api-crds+envoy-gateway-crds",
        f"{version} (Gateway API {gw_api['version']} {gw_api['channel']})", source_url,
        (f"helm template eg-crds {eg['crd_chart']} --version {version} "
         "--set crds.gatewayAPI.enabled=true "
         f"--set crds.gatewayAPI.channel={gw_api['channel']} "
         "--set crds.envoyGateway.enabled=true | kubectl apply --server-side -f -",),
        tools=("helm", "kubectl"),
    ))  # fmt: skip
    steps.append(AddonStep("envoy-gateway", version, source_url, (
        f"helm upgrade --install eg {eg['chart']} --version {version} "
        f"-n {q(st.gateway_namespace)} --create-namespace --set crds.enabled=false --wait",
        f"kubectl wait --timeout=5m -n {q(st.gateway_namespace)} deployment/envoy-gateway "
        "--for=condition=Available",
    ), tools=("helm", "kubectl")))  # fmt: skip
    lab_objects = addon_objects(cfg)
    gateway_docs = [o for o in lab_objects if o["kind"] in ("EnvoyProxy", "GatewayClass")]
    steps.append(AddonStep(
        f"gatewayclass {cfg.gateway_class_name} + envoyproxy {ENVOY_PROXY}", version,
        "Envoy Gateway v1.9.0 examples/kubernetes/quickstart.yaml (GatewayClass eg); "
        "api/v1alpha1/envoyproxy_types.go (provider.kubernetes.envoyService.annotations)",
        (_heredoc("kubectl apply --server-side -f -", yaml.safe_dump_all(gateway_docs)),),
        tools=("kubectl",), objects=tuple(gateway_docs),
    ))  # fmt: skip
    version, source_url = pin("aws-load-balancer-controller")
    lbc = pins["aws-load-balancer-controller"]
    steps.append(AddonStep("aws-load-balancer-controller", version, source_url, (
        f"helm repo add eks {lbc['repo']} --force-update",
        f"helm upgrade --install aws-load-balancer-controller {lbc['chart']} --version {version} "
        f"-n {lbc['namespace']} --set clusterName={q(name)} --set serviceAccount.create=false "
        f"--set serviceAccount.name=aws-load-balancer-controller --set region={q(st.region)} "
        f"--set vpcId=$(aws eks describe-cluster --name {q(name)} --region {q(st.region)} "
        "--query cluster.resourcesVpcConfig.vpcId --output text) --wait",
    ), tools=("helm", "aws")))  # fmt: skip
    version, source_url = pin("aws-efs-csi-driver")
    storage_docs = [o for o in lab_objects if o["kind"] == "StorageClass"]
    steps.append(AddonStep(f"aws-efs-csi-driver + storageclass {cfg.model_storage_class}",
                           version, source_url, (
        "helm repo add aws-efs-csi-driver https://kubernetes-sigs.github.io/aws-efs-csi-driver/ "
        "--force-update",
        "helm upgrade --install aws-efs-csi-driver aws-efs-csi-driver/aws-efs-csi-driver "
        "--version 4.4.1 -n kube-system --set controller.serviceAccount.create=false "
        "--set controller.serviceAccount.name=efs-csi-controller-sa --wait",
        _heredoc("kubectl apply --server-side -f -", yaml.safe_dump_all(storage_docs)),
    ), tools=("helm", "kubectl"), objects=tuple(storage_docs)))  # fmt: skip
    version, source_url = pin("nvidia-device-plugin")
    nv = pins["nvidia-device-plugin"]
    steps.append(AddonStep("nvidia-device-plugin", version, source_url, (
        f"helm repo add nvdp {nv['repo']} --force-update",
        # The chart's default affinity needs NFD labels or nvidia.com/gpu.present=true, which
        # the rendered NodePools put on their GPU nodes.
        f"helm upgrade --install nvdp {nv['chart']} --version {version} "
        f"--namespace {nv['namespace']} --create-namespace --wait",
    )))  # fmt: skip
    version, source_url = pin("kube-prometheus-stack")
    kps = pins["kube-prometheus-stack"]
    steps.append(AddonStep("kube-prometheus-stack", version, source_url, (
        f"helm repo add prometheus-community {kps['repo']} --force-update",
        # Release name = the PodMonitor's `release` label: the chart's Prometheus selects
        # PodMonitors by it (podMonitorSelectorNilUsesHelmValues: true, the default).
        f"helm upgrade --install {q(st.monitoring_release)} {kps['chart']} --version {version} "
        f"-n {q(st.monitoring_namespace)} --create-namespace --wait",
    )))  # fmt: skip
    # The lab's alerting rules and Grafana dashboard (labutils/data/monitoring/): the rules
    # carry the release label the chart's Prometheus selects PrometheusRules by
    # (ruleSelectorNilUsesHelmValues: true), the dashboard the label its Grafana sidecar loads
    # ConfigMaps by (grafana_dashboard: "1"); both in the monitoring namespace.
    monitoring_docs = []
    for obj in monitoring_addons():
        doc = {k: v for k, v in obj.items() if k != "__source__"}
        meta = doc.setdefault("metadata", {})
        meta["namespace"] = st.monitoring_namespace
        if doc.get("kind") == "PrometheusRule":
            meta.setdefault("labels", {})["release"] = st.monitoring_release
        monitoring_docs.append(doc)
    steps.append(AddonStep("lab-monitoring", "this lab", "labutils/data/monitoring/", (
        _heredoc(
            "kubectl apply --server-side --field-manager labutils -f -",
            yaml.safe_dump_all(monitoring_docs, sort_keys=False),
        ),
    ), tools=("kubectl",), objects=tuple(monitoring_docs)))  # fmt: skip
    version, source_url = pin("prometheus-adapter")
    adapter = pins["prometheus-adapter"]
    url, _, port = st.prometheus_url.rpartition(":")
    values = {
        "prometheus": {"url": url, "port": int(port) if port.isdigit() else 9090},
        "rules": {"default": False, "custom": _adapter_rules(src)},
    }
    steps.append(AddonStep("prometheus-adapter", version, source_url, (
        _heredoc(
            f"helm upgrade --install prometheus-adapter {adapter['chart']} --version {version} "
            f"-n {q(st.monitoring_namespace)} --wait -f -",
            yaml.safe_dump(values, sort_keys=False),
        ),
    )))  # fmt: skip
    return steps


def format_steps(steps: list[AddonStep]) -> str:
    """The steps as a shell script an instructor can read or run."""
    lines = ["#!/usr/bin/env bash", "set -euo pipefail", ""]
    for i, step in enumerate(steps, 1):
        lines.append(f"# {i}. {step.name} {step.version}")
        lines.append(f"#    source: {step.source}")
        lines.extend(step.commands)
        lines.append("")
    return "\n".join(lines)


def apply_steps(
    steps: list[AddonStep], *, runner: Any = subprocess.run, which: Any = shutil.which
) -> list[str]:
    """Run every step's commands with bash (``set -euo pipefail``); stop at the first failure.

    Raises:
        ToolError: ``bash`` or a tool a step needs is not on PATH, or a command failed.
    """
    needed = sorted({"bash", *(t for s in steps for t in s.tools)})
    missing = [tool for tool in needed if which(tool) is None]
    if missing:
        raise ToolError(
            f"instructor addons --apply needs {', '.join(missing)} on PATH; install "
            "them (or run the commands of --print by hand)"
        )
    done = []
    for step in steps:
        for command in step.commands:
            result = runner(["bash", "-euo", "pipefail", "-c", command], check=False)
            if result.returncode != 0:
                first = command.splitlines()[0]
                raise ToolError(
                    f"addon {step.name}: `{first[:120]}` exited {result.returncode}; fix and "
                    "rerun (every step is an idempotent upgrade --install / apply)"
                )
        done.append(step.name)
    return done


def _check_apply(cfg: LabConfig) -> None:
    if not cluster_settings(cfg).efs_file_system_id:
        raise ConfigError(
            "lab.yaml: eks.efs_file_system_id is empty; create the EFS file system (docs/"
            "instructor.md, 'EFS') and set its id before --apply"
        )
