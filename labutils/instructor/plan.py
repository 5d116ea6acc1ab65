"""``labctl instructor plan``: what a workshop needs from AWS, for both profiles.

For ``--participants N`` and ``--hours H`` and each workshop profile of ``lab.yaml``
(``shared-fleet``: one fleet; ``per-participant``: N small fleets) it computes, per zone and in
total, the GPU nodes and vCPUs at the start (``replicas`` groups) and at the HPA maximum
(``max_replicas``), the EC2 On-Demand vCPU quota to request (the instance family's quota: G and
VT, or P), GPU-hours, and the cost with its line items (GPU and system nodes, NLBs, NAT
gateways and their traffic, EFS storage and throughput, the EKS control plane), each with its
price's source and date from ``labutils/data/prices.yaml``. It refuses a plan the rendered
Karpenter NodePools cannot hold (their GPU limits come from ``lab.yaml``).

Arithmetic (one vLLM pod per node, as the manifests size pods; a group is PP nodes):
nodes = groups x PP; GPUs (billed) = nodes x GPUs per node; vCPUs = nodes x vCPUs per node;
GPU-hours = GPUs x hours; node cost = nodes x hours x price. The baseline holds ``replicas``
groups for the whole session; the maximum holds ``max_replicas`` for the whole session (an
upper bound).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from labutils import catalog
from labutils.config import LabConfig, load_config, manifests_dir
from labutils.errors import ConfigError
from labutils.kube.labels import GPU_RESOURCE
from labutils.manifests.loader import load_objects
from labutils.manifests.render import render
from labutils.manifests.settings import PROFILES, cluster_settings, profile_config

__all__ = [
    "IMAGE_GB",
    "JUPYTER_CPU",
    "SYSTEM_NODE_VCPUS",
    "ProfilePlan",
    "ZonePlan",
    "load_addons",
    "load_line_items",
    "plan_workshop",
]

# vllm/vllm-openai image size pulled by each new GPU node through the NAT gateway (compressed
# layers, ~10 GB; docs/manifests.md). An estimate: the plan says so in the line item.
IMAGE_GB = 10.0
# Each participant's JupyterLab requests 1 vCPU (participant/jupyterlab.yaml); system nodes
# (m6i.2xlarge, 8 vCPU) keep 1 vCPU for kube-system daemons. At least two for the controllers.
JUPYTER_CPU = 1.0
SYSTEM_NODE_VCPUS = 8
_MIN_SYSTEM_NODES = 2


def load_line_items() -> dict[str, dict[str, Any]]:
    """The ``line_items`` of ``labutils/data/prices.yaml`` (price, unit, source, date each)."""
    data = yaml.safe_load(resources.files("labutils").joinpath("data/prices.yaml").read_text())
    items = data.get("line_items") if isinstance(data, dict) else None
    if not isinstance(items, dict):
        raise ConfigError("labutils/data/prices.yaml: expected 'line_items' (NLB, NAT, EFS...)")
    for name, item in items.items():
        missing = {"usd", "unit", "source", "as_of"} - set(item or {})
        if missing:
            raise ConfigError(f"labutils/data/prices.yaml: line_items.{name} lacks {missing}")
    return dict(items)


def load_addons() -> dict[str, Any]:
    """``labutils/data/addons.yaml``: the pinned add-on versions and the quotas' codes."""
    text = resources.files("labutils").joinpath("data/addons.yaml").read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "addons" not in data:
        raise ConfigError("labutils/data/addons.yaml: expected 'addons' with pinned versions")
    return data


@dataclass(frozen=True)
class ZonePlan:
    """One zone: groups, nodes, GPUs and vCPUs at the baseline and at the HPA maximum."""

    zone: str
    groups: int
    nodes: int
    gpus: int
    vcpus: int
    max_groups: int
    max_nodes: int
    max_gpus: int
    max_vcpus: int
    nodepool_gpu_limit: int


@dataclass(frozen=True)
class ProfilePlan:
    """A workshop profile's plan (see the module docstring for the arithmetic)."""

    profile: str
    participants: int
    hours: float
    fleets: int
    model: str
    instance_type: str
    gpus_per_node: int
    vcpus_per_node: int
    zones: tuple[ZonePlan, ...]
    quota: dict[str, Any]
    nlbs: int
    line_items: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def total(self, key: str) -> int:
        """Sum of a :class:`ZonePlan` field over the zones (``nodes``, ``max_gpus``...)."""
        return sum(int(getattr(z, key)) for z in self.zones)

    @property
    def gpu_hours(self) -> float:
        return self.total("gpus") * self.hours

    @property
    def max_gpu_hours(self) -> float:
        return self.total("max_gpus") * self.hours

    @property
    def cost_usd(self) -> float:
        return round(sum(i["usd"] for i in self.line_items if not i["at_max"]), 2)

    @property
    def max_cost_usd(self) -> float:
        return round(sum(i["usd"] for i in self.line_items if i["at_max"] is not False), 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: zones, totals, quota, GPU-hours, cost and its line items."""
        keys = ("nodes", "gpus", "vcpus", "max_nodes", "max_gpus", "max_vcpus")
        return {
            "profile": self.profile,
            "participants": self.participants,
            "hours": self.hours,
            "fleets": self.fleets,
            "model": self.model,
            "instance_type": self.instance_type,
            "gpus_per_node": self.gpus_per_node,
            "vcpus_per_node": self.vcpus_per_node,
            "zones": [dataclasses.asdict(z) for z in self.zones],
            "total": {k: self.total(k) for k in keys},
            "quota": self.quota,
            "gpu_hours": {"baseline": self.gpu_hours, "max": self.max_gpu_hours},
            "nlbs": self.nlbs,
            "cost_usd": {"baseline": self.cost_usd, "max": self.max_cost_usd},
            "line_items": list(self.line_items),
            "warnings": list(self.warnings),
        }


def _item(
    name: str,
    prices: dict[str, dict[str, Any]],
    quantity: float,
    what: str,
    at_max: bool | None = None,
) -> dict[str, Any]:
    price = prices[name]
    return {
        "item": what,
        "quantity": round(quantity, 3),
        "unit": price["unit"],
        "usd_per_unit": float(price["usd"]),
        "usd": round(quantity * float(price["usd"]), 2),
        "source": price["source"],
        "as_of": price["as_of"],
        # None: in both totals; False: baseline only; True: maximum only
        "at_max": at_max,
    }


def _nodepool_limits(cfg: LabConfig, source: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="lab-plan-") as tmp:
        render(cfg, tmp, source)
        limits = {}
        for obj in load_objects(Path(tmp) / "zones"):
            if obj.kind == "NodePool":
                zone = obj.labels.get("vllm-lws-lab.io/zone", "")
                limits[zone] = int(str((obj.get("spec", "limits") or {}).get(GPU_RESOURCE, "0")))
        return limits


def _quota(instance: str, vcpus: int, addons: dict[str, Any]) -> dict[str, Any]:
    family = "p_on_demand_vcpus" if instance.startswith("p") else "g_and_vt_on_demand_vcpus"
    quota = addons["quotas"][family]
    return {"code": quota["code"], "name": quota["name"], "vcpus": vcpus,
            "source": quota["source"]}  # fmt: skip


def _profile_plan(
    base: LabConfig,
    profile: str,
    participants: int,
    hours: float,
    source: Path,
    prices: dict[str, Any],
    line: dict[str, dict[str, Any]],
    addons: dict[str, Any],
) -> ProfilePlan:
    cfg = profile_config(base, profile)
    cfg = dataclasses.replace(cfg, extra={**cfg.extra, "profile": profile})
    st = cluster_settings(cfg)
    node = catalog.instance_type(cfg.instance_type)
    fleets = participants if profile == "per-participant" else 1
    pp = cfg.pipeline_parallel_size
    limits = _nodepool_limits(cfg, source)
    zones = []
    for zone in cfg.zones:
        groups, max_groups = cfg.replicas * fleets, cfg.max_replicas * fleets
        nodes, max_nodes = groups * pp, max_groups * pp
        zones.append(ZonePlan(
            zone, groups, nodes, nodes * node.gpus, nodes * node.vcpus, max_groups, max_nodes,
            max_nodes * node.gpus, max_nodes * node.vcpus, limits.get(zone, 0),
        ))  # fmt: skip
        if max_nodes * node.gpus > limits.get(zone, 0):
            raise ConfigError(
                f"plan ({profile}): {participants} participants need {max_nodes * node.gpus} GPUs "
                f"in {zone} at the HPA maximum but NodePool vllm-gpu-{zone} allows "
                f"{limits.get(zone, 0)}; raise participants.count in lab.yaml (the NodePools are "
                "sized for it), re-render and re-apply them"
            )
    plan_zones = tuple(zones)
    max_vcpus = sum(z.max_vcpus for z in plan_zones)
    quota = _quota(cfg.instance_type, max_vcpus, addons)
    usd_hour = prices["usd_per_hour"].get(cfg.instance_type)
    if usd_hour is None:
        raise ConfigError(
            f"labutils/data/prices.yaml: no price for {cfg.instance_type}; add it under "
            "usd_per_hour"
        )
    node_price = {"usd": usd_hour, "unit": f"{cfg.instance_type}-hour",
                  "source": prices["source"], "as_of": prices["as_of"]}  # fmt: skip
    gpu_line = {"gpu_node_hour": node_price}
    base_nodes = sum(z.nodes for z in plan_zones)
    max_nodes = sum(z.max_nodes for z in plan_zones)
    items = [
        _item("gpu_node_hour", gpu_line, base_nodes * hours,
              f"GPU nodes at the baseline ({base_nodes} x {cfg.instance_type})", False),
        _item("gpu_node_hour", gpu_line, max_nodes * hours,
              f"GPU nodes at the HPA maximum ({max_nodes} x {cfg.instance_type})", True),
    ]  # fmt: skip
    system_nodes = max(_MIN_SYSTEM_NODES,
                       math.ceil(participants * JUPYTER_CPU / (SYSTEM_NODE_VCPUS - 1)))  # fmt: skip
    nat_gateways = len(cfg.zones) if st.nat_gateway == "HighlyAvailable" else 1
    nlbs = fleets * (1 + (len(cfg.zones) if st.zone_load_balancers else 0))
    weights_gb = catalog.model(cfg.model).weight_bytes / 1e9
    caches = fleets * len(cfg.zones)  # one ReadWriteMany cache per zone per fleet
    nat_gb = caches * weights_gb + base_nodes * IMAGE_GB
    items += [
        _item("system_node_hour", line, system_nodes * hours,
              f"system nodes ({system_nodes}: controllers + {participants} JupyterLabs)"),
        _item("eks_cluster_hour", line, hours, "EKS control plane"),
        _item("nlb_hour", line, nlbs * hours,
              f"NLBs ({nlbs}: a gateway per fleet"
              + (f" + {len(cfg.zones)} zone NLBs each)" if st.zone_load_balancers else ")")),
        _item("nlb_lcu_hour", line, nlbs * hours, "NLB capacity units (estimate: 1 NLCU each)"),
        _item("nat_gateway_hour", line, nat_gateways * hours,
              f"NAT gateways ({nat_gateways}, {st.nat_gateway})"),
        _item("nat_gateway_gb", line, nat_gb,
              f"NAT traffic: weights {weights_gb:.0f} GB x {caches} caches + image "
              f"~{IMAGE_GB:.0f} GB x {base_nodes} nodes (estimate)"),
        _item("efs_standard_gb_month", line, caches * weights_gb * hours / 730.0,
              f"EFS storage: {caches} caches x {weights_gb:.0f} GB for {hours:g} h"),
        _item("efs_elastic_write_gb", line, caches * weights_gb, "EFS writes: weights stored once"),
        _item("efs_elastic_read_gb", line, base_nodes * weights_gb / pp,
              f"EFS reads: each of {base_nodes} pods loads its share of the weights once"),
    ]  # fmt: skip
    notes = []
    nlb_quota = int(addons["quotas"]["network_load_balancers"]["default"])
    if nlbs > nlb_quota:
        notes.append(
            f"{nlbs} NLBs exceed the default quota of {nlb_quota} per region: request more, or "
            "set gateway.zone_load_balancers: false in lab.yaml"
        )
    return ProfilePlan(
        profile=profile, participants=participants, hours=hours, fleets=fleets, model=cfg.model,
        instance_type=cfg.instance_type, gpus_per_node=node.gpus, vcpus_per_node=node.vcpus,
        zones=plan_zones, quota=quota, nlbs=nlbs, line_items=tuple(items), warnings=tuple(notes),
    )  # fmt: skip


def plan_workshop(
    participants: int,
    hours: float,
    *,
    config: LabConfig | None = None,
    source: str | Path | None = None,
) -> dict[str, ProfilePlan]:
    """The plan of each workshop profile for ``participants`` over ``hours``.

    Raises:
        ConfigError: ``participants``/``hours`` out of range, a profile whose HPA maximum the
            rendered NodePools cannot hold, or a missing price.
    """
    if not 1 <= participants <= 99:
        raise ConfigError(f"plan: --participants {participants} must be in 1..99")
    if not 0 < hours <= 72:
        raise ConfigError(f"plan: --hours {hours:g} must be in (0, 72]")
    src = Path(source) if source else manifests_dir()
    base = config or load_config(src / "lab.yaml")
    prices = catalog.load_prices()
    line = load_line_items()
    addons = load_addons()
    return {
        profile: _profile_plan(base, profile, participants, hours, src, prices, line, addons)
        for profile in PROFILES
    }
