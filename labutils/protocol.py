"""The one interface notebooks use, whatever the target (``local`` twin or ``eks``).

Both backends implement :class:`Backend` with the same method names and return types, so a
notebook's only target-specific line is ``backend = labutils.targets.get_backend()`` (which
reads ``LAB_TARGET``). This module is a leaf: it imports nothing from the targets.
Implementations: :class:`labutils.targets.twin.TwinBackend` (local twin) and
:class:`labutils.targets.eks.EksBackend` (real cluster through the ``kubernetes`` client).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

__all__ = [
    "Backend",
    "Endpoints",
    "FaultInjector",
    "GroupEndpoint",
    "MetricsScrape",
    "PrometheusApi",
]


@dataclass(frozen=True)
class GroupEndpoint:
    """One LWS group's leader: the only pod of a group that serves HTTP."""

    zone: str
    lws: str
    group: str  # "<lws>-<g>", the leader pod's name
    url: str  # base URL of the leader's server ("" where only reachable by API-server proxy)
    ready: bool = True


@dataclass(frozen=True)
class Endpoints:
    """Where to send traffic: the gateway (the lab's entry point) and, for drills, each zone."""

    gateway_url: str
    model: str  # the served model name clients send
    zone_urls: dict[str, str] = field(default_factory=dict)
    groups: tuple[GroupEndpoint, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Authorization from env

    def to_frame(self) -> pd.DataFrame:
        """One row per group leader, plus the gateway and zone entry points."""
        rows: list[dict[str, Any]] = [
            {
                "kind": "gateway",
                "zone": "*",
                "name": "gateway",
                "url": self.gateway_url,
                "ready": True,
            }
        ]
        rows += [
            {"kind": "zone", "zone": z, "name": z, "url": u, "ready": True}
            for z, u in self.zone_urls.items()
        ]
        rows += [
            {"kind": "group", "zone": g.zone, "name": g.group, "url": g.url, "ready": g.ready}
            for g in self.groups
        ]
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class MetricsScrape:
    """One ``/metrics`` scrape of one group leader, as text, with when and where it came from."""

    zone: str
    group: str
    time_s: float  # wall-clock (time.time()) at the end of the scrape
    text: str
    error: str | None = None  # set (and text empty) when the scrape failed


@runtime_checkable
class PrometheusApi(Protocol):
    """Prometheus's HTTP API as one target reaches it (directly, or through the API server).

    ``url`` says where it is (for messages and links); :meth:`get` does one request.
    Implementations: :class:`labutils.metrics.prometheus.HttpPrometheus` (the twin's local
    server, an in-cluster URL, a port-forward) and the EKS backend's API-server service proxy.
    """

    url: str

    def get(self, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /api/v1/<endpoint>`` with ``params``; the decoded JSON body, error bodies too.

        Raises:
            MetricsError: Prometheus is unreachable or did not answer with JSON.
        """
        ...


@runtime_checkable
class Backend(Protocol):
    """Operations both targets offer (same names, same return types)."""

    target: str

    def apply(
        self, rendered_dir: Path | None = None, *, wait: bool = True, timeout_s: float = 900.0
    ) -> pd.DataFrame:
        """Apply the rendered manifests; with ``wait``, return when every LWS is Available."""
        ...

    def wait_ready(self, timeout_s: float = 900.0) -> pd.DataFrame:
        """Wait (with a progress bar) until every LWS is Available; return :meth:`status`."""
        ...

    def status(self) -> pd.DataFrame:
        """One row per LWS: zone, replicas, ready_replicas, updated_replicas, conditions."""
        ...

    def groups(self) -> pd.DataFrame:
        """One row per pod: zone, lws, group, role (leader/worker), node, ready, restarts."""
        ...

    def scale(self, lws: str, replicas: int) -> None:
        """Set an LWS's replicas (groups) through its scale subresource."""
        ...

    def endpoints(self) -> Endpoints:
        """The gateway, per-zone and per-group URLs."""
        ...

    def scrape_metrics(self) -> list[MetricsScrape]:
        """Scrape every ready group leader's ``/metrics`` once."""
        ...

    def events(self) -> pd.DataFrame:
        """Recent events of lab objects (scaling decisions, restarts, health changes)."""
        ...

    def hpa_events(self) -> pd.DataFrame:
        """The HPAs' scaling decisions, one row each (what inputs each target can show)."""
        ...

    def reset(self, *, yes: bool = False) -> pd.DataFrame:
        """Delete what the lab created (dry-run table unless ``yes``)."""
        ...

    def prometheus(self) -> PrometheusApi:
        """The Prometheus that scrapes this target's leaders (PromQL for monitoring and HPAs)."""
        ...


@runtime_checkable
class FaultInjector(Protocol):
    """Fault injection and process control, which only the local twin offers.

    On EKS a drill's fault is a real action (cordon, delete pods) that the lab does not take on
    a participant's behalf; code that needs faults asks
    :func:`labutils.targets.fault_injector` and says what it cannot do when it gets ``None``.
    """

    state_dir: Path

    def fail(
        self, *, zone: str | None = None, group: str | None = None, mode: str = "kill"
    ) -> list[str]:
        """Inject ``mode`` (kill, unhealthy, slow) into a zone's groups or one group."""
        ...

    def restore(self, *, zone: str | None = None, group: str | None = None) -> list[str]:
        """Undo :meth:`fail`; returns the groups affected."""
        ...

    def down(self) -> list[int]:
        """Stop every process the target started; returns their PIDs."""
        ...

    def leftovers(self) -> dict[str, Any]:
        """Processes, ports and files still held (empty after :meth:`down`)."""
        ...
