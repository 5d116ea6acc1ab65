"""The cluster-facing settings of ``lab.yaml`` and the workshop profile, in one place.

:class:`labutils.config.LabConfig` carries the deployment knobs (zones, model, TP/PP,
replicas...); the settings of the EKS cluster around it (VPC CIDR, monitoring namespace and
Helm release, Prometheus address, gateway namespace and failover mode, Karpenter AMI, NLB
deregistration delay...) and the workshop profile live in ``lab.yaml`` too and are read here
from ``LabConfig.extra``. Rendering, ``labctl instructor`` and the EKS preflight all use
:func:`cluster_settings` and :func:`effective_config`, so no module hard-codes them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from labutils.config import LabConfig
from labutils.errors import ConfigError

__all__ = [
    "FAILOVER_MODES",
    "PROFILES",
    "ClusterSettings",
    "cluster_settings",
    "effective_config",
    "profile_config",
]

FAILOVER_MODES = ("weighted-split", "zone-aware")
# The two workshop profiles `labctl instructor plan` prints (lab.yaml `profile:` picks one).
PROFILES = ("shared-fleet", "per-participant")
_PROFILE_FIELDS = (
    "zones",
    "model",
    "served_model_name",
    "instance_type",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "replicas",
    "min_replicas",
    "max_replicas",
)
_AMI_ALIAS = re.compile(r"^al2023@v\d{8}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ClusterSettings:
    """The EKS cluster around the lab, from ``lab.yaml`` (see the comments there)."""

    region: str = "us-west-2"
    kubernetes_version: str = "1.34"
    vpc_cidr: str = "10.0.0.0/16"
    karpenter_ami_alias: str = "al2023@v20260714"
    monitoring_namespace: str = "monitoring"
    monitoring_release: str = "kube-prometheus-stack"
    prometheus_url: str = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    gateway_namespace: str = "envoy-gateway-system"
    gateway_failover: str = "weighted-split"
    zone_load_balancers: bool = True
    nlb_deregistration_delay_s: int = 30
    prestop_sleep_s: int = 20
    startup_timeout_s: int = 3600
    nat_gateway: str = "HighlyAvailable"
    efs_file_system_id: str = ""
    instructor_arn: str = ""
    participant_prefix: str = "p"
    participant_count: int = 30
    jupyter_image: str = "REGISTRY/vllm-lws-lab-jupyterlab:0.1.0"
    profile: str = "shared-fleet"


def _str(raw: dict[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"lab.yaml: {key} must be a non-empty string, got {value!r}")
    return value


def _int(raw: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"lab.yaml: {key} must be an integer in {low}..{high}, got {value!r}")
    return value


def _section(cfg: LabConfig, name: str) -> dict[str, Any]:
    raw = cfg.extra.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"lab.yaml: {name} must be a mapping of settings, got {raw!r}")
    return raw


def cluster_settings(cfg: LabConfig) -> ClusterSettings:
    """The cluster settings of ``cfg`` (its ``eks``, ``monitoring``, ``gateway`` sections).

    Raises:
        ConfigError: a value has the wrong type or is out of range (names the key).
    """
    base = ClusterSettings()
    eks, mon, gw = _section(cfg, "eks"), _section(cfg, "monitoring"), _section(cfg, "gateway")
    cidr = _str(eks, "vpc_cidr", base.vpc_cidr)
    try:
        ipaddress.ip_network(cidr)
    except ValueError:
        raise ConfigError(
            f"lab.yaml: eks.vpc_cidr {cidr!r} is not a CIDR (e.g. 10.0.0.0/16)"
        ) from None
    ami = _str(eks, "karpenter_ami_alias", base.karpenter_ami_alias)
    if not _AMI_ALIAS.match(ami):
        raise ConfigError(
            f"lab.yaml: eks.karpenter_ami_alias {ami!r} must pin a release, e.g. al2023@v20260714 "
            "(not @latest: a new AMI would drift and replace GPU nodes mid-session)"
        )
    nat = _str(eks, "nat_gateway", base.nat_gateway)
    if nat not in ("HighlyAvailable", "Single"):
        raise ConfigError(f"lab.yaml: eks.nat_gateway {nat!r}; choose HighlyAvailable or Single")
    efs_id = str(eks.get("efs_file_system_id") or "")
    if efs_id and not re.match(r"^fs-[0-9a-f]{8,17}$", efs_id):
        raise ConfigError(f"lab.yaml: eks.efs_file_system_id {efs_id!r} is not an EFS id (fs-...)")
    failover = _str(gw, "failover", base.gateway_failover)
    if failover not in FAILOVER_MODES:
        raise ConfigError(
            f"lab.yaml: gateway.failover {failover!r}; choose one of: {', '.join(FAILOVER_MODES)}"
        )
    zone_lbs = gw.get("zone_load_balancers", base.zone_load_balancers)
    if not isinstance(zone_lbs, bool):
        raise ConfigError("lab.yaml: gateway.zone_load_balancers must be true or false")
    for section, key in ((mon, "namespace"), (gw, "namespace")):
        value = section.get(key)
        if value is not None and (not isinstance(value, str) or not _DNS_LABEL.match(value)):
            raise ConfigError(f"lab.yaml: {key} {value!r} is not a namespace name")
    profile = cfg.extra.get("profile", base.profile)
    if profile not in PROFILES:
        raise ConfigError(f"lab.yaml: profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    part = _section(cfg, "participants")
    prefix = _str(part, "prefix", base.participant_prefix)
    if not _DNS_LABEL.match(prefix + "00"):
        raise ConfigError(f"lab.yaml: participants.prefix {prefix!r} must start a namespace name")
    return ClusterSettings(
        region=_str(eks, "region", base.region),
        kubernetes_version=str(eks.get("kubernetes_version", base.kubernetes_version)),
        vpc_cidr=cidr,
        karpenter_ami_alias=ami,
        monitoring_namespace=_str(mon, "namespace", base.monitoring_namespace),
        monitoring_release=_str(mon, "helm_release", base.monitoring_release),
        prometheus_url=_str(mon, "prometheus_url", base.prometheus_url),
        gateway_namespace=_str(gw, "namespace", base.gateway_namespace),
        gateway_failover=failover,
        zone_load_balancers=zone_lbs,
        nlb_deregistration_delay_s=_int(
            gw, "nlb_deregistration_delay_s", base.nlb_deregistration_delay_s, 0, 3600
        ),
        prestop_sleep_s=_int(gw, "prestop_sleep_s", base.prestop_sleep_s, 0, 600),
        startup_timeout_s=_int(eks, "startup_timeout_s", base.startup_timeout_s, 600, 14400),
        nat_gateway=nat,
        efs_file_system_id=efs_id,
        instructor_arn=str(eks.get("instructor_arn") or ""),
        participant_prefix=prefix,
        participant_count=_int(part, "count", base.participant_count, 1, 99),
        jupyter_image=_str(part, "jupyter_image", base.jupyter_image),
        profile=str(profile),
    )


def profile_config(cfg: LabConfig, profile: str) -> LabConfig:
    """``cfg`` with the overrides of ``profiles.<profile>`` from ``lab.yaml`` applied.

    ``shared-fleet`` is the top of ``lab.yaml`` as written (unless ``profiles.shared-fleet``
    overrides something); ``per-participant`` is the small fleet each participant deploys.

    Raises:
        ConfigError: an unknown profile, or an override of a field a profile may not set.
    """
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    profiles = cfg.extra.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError("lab.yaml: profiles must map a profile name to its overrides")
    overrides = profiles.get(profile) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"lab.yaml: profiles.{profile} must be a mapping of overrides")
    unknown = sorted(set(overrides) - set(_PROFILE_FIELDS))
    if unknown:
        raise ConfigError(
            f"lab.yaml: profiles.{profile} sets {unknown}; a profile may set: "
            f"{', '.join(_PROFILE_FIELDS)}"
        )
    values = dict(overrides)
    if "zones" in values:
        values["zones"] = tuple(values["zones"])
    for key, value in values.items():
        want = type(getattr(cfg, key))
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(
                f"lab.yaml: profiles.{profile}.{key} must be a {want.__name__}, got {value!r}"
            )
    return dataclasses.replace(cfg, **values)


def effective_config(cfg: LabConfig) -> LabConfig:
    """``cfg`` with the profile ``lab.yaml`` selects (``profile:``) applied."""
    return profile_config(cfg, cluster_settings(cfg).profile)
