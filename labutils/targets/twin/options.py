"""Twin settings that are not in the manifests (shared by the backend and the controller)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

__all__ = ["TwinOptions"]


@dataclass
class TwinOptions:
    """Twin settings that are not in the manifests."""

    manifests: str = ""
    manifests_digest: str = ""  # of the rendered YAML: a change is applied to the running twin
    strategy: str = "weighted"
    engine_command: list[str] = field(default_factory=lambda: [sys.executable, "-m",
                                                              "labutils.sim"])  # fmt: skip
    model_load_s: float = 2.0
    sync_period_s: float = 15.0
    downscale_stabilization_s: float = 300.0
    time_scale: float = 1.0  # multiplies health-check, scrape and alert `for:` intervals
    scrape_interval_s: float | None = None  # overrides the PodMonitors' interval x time_scale
    seed: int = 0
    spare_slots: int = 2  # HAProxy slots beyond max(replicas, maxReplicas) per zone
