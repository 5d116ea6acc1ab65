"""Twin settings that are not in the manifests (shared by the backend and the controller)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labutils import catalog
from labutils.errors import ConfigError, TwinError
from labutils.sim.perf import group_start_time_s

if TYPE_CHECKING:
    from labutils.targets.twin.spec import ZoneSpec

__all__ = ["GROUP_KINDS", "INITIAL_GROUP_LOAD_S", "TwinOptions"]

# Model-load time of the groups the twin starts with (``twin up``, notebook 01's rollout): they
# stand for a fleet that is already deployed, and a 3 x 2 twin must start in seconds. The lag of
# real GPU groups shows on the groups added or recreated later.
INITIAL_GROUP_LOAD_S = 2.0

# How a group came to be: in the first rollout, added by a scale-up (HPA, `twin scale`, a
# replica change applied) on new nodes, or recreated on its nodes after its engine died.
GROUP_KINDS = ("initial", "added", "recreated")


@dataclass
class TwinOptions:
    """Twin settings that are not in the manifests."""

    manifests: str = ""
    manifests_digest: str = ""  # of the rendered YAML: a change is applied to the running twin
    strategy: str = "weighted"
    engine_command: list[str] = field(default_factory=lambda: [sys.executable, "-m",
                                                              "labutils.sim"])  # fmt: skip
    model_load_s: float | None = None  # None: from model, storage and instance (group_load_s)
    sync_period_s: float = 15.0
    downscale_stabilization_s: float = 300.0
    time_scale: float = 1.0  # multiplies health-check, scrape and alert `for:` intervals
    scrape_interval_s: float | None = None  # overrides the PodMonitors' interval x time_scale
    seed: int = 0
    spare_slots: int = 2  # HAProxy slots beyond max(replicas, maxReplicas) per zone
    engine_calibration: str = ""  # --calibration FILE for the simulated engines ("" = none)

    def group_load_s(self, zone: ZoneSpec, kind: str) -> float:
        """Simulated model-load time of a new group of ``zone`` (seconds, before ``/health``).

        An explicit ``model_load_s`` applies to every group. Otherwise a group added by a
        scale-up takes what a real one takes on EKS, :func:`labutils.sim.perf.group_start_time_s`
        (node launch, image pull, weight load from storage, vLLM warm-up) for the zone's model,
        instance type and nodes per group, multiplied by ``time_scale`` like the twin's other
        intervals; a recreated group keeps its nodes and image (weight load and warm-up only);
        the first rollout's groups take :data:`INITIAL_GROUP_LOAD_S`.

        Raises:
            TwinError: an unknown ``kind``, or a model or instance type the catalogue lacks.
        """
        if kind not in GROUP_KINDS:
            raise TwinError(f"group kind {kind!r}; choose one of: {', '.join(GROUP_KINDS)}")
        if self.model_load_s is not None:
            return self.model_load_s
        if kind == "initial":
            return INITIAL_GROUP_LOAD_S
        try:
            model = catalog.model(zone.engine.model)
            instance = catalog.instance_type(zone.instance_type)
        except ConfigError as exc:
            raise TwinError(
                f"{zone.lws}: no start time for a new group ({exc}); pass model_load_s"
            ) from None
        real_s = group_start_time_s(
            model,
            instance,
            nodes=zone.size,
            node_launch=kind == "added",
            image_cached=kind == "recreated",
        )
        return real_s * self.time_scale
