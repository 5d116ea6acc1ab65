"""The lab's cluster-wide monitoring add-ons: alerting rules and the Grafana dashboard.

Both live in ``labutils/data/monitoring/`` as Kubernetes objects for the ``monitoring``
namespace (installed once per cluster next to kube-prometheus-stack, like the prometheus-adapter
rules): ``prometheusrule.yaml`` (a ``PrometheusRule``) and ``grafana-dashboard.yaml`` (a
ConfigMap labelled ``grafana_dashboard: "1"``). The local twin loads the same rule groups into
its own Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from labutils.errors import ConfigError

__all__ = [
    "ADDONS_DIR",
    "dashboard_queries",
    "grafana_dashboards",
    "monitoring_addons",
    "prometheus_rules",
]

ADDONS_DIR = Path(__file__).resolve().parent.parent / "data" / "monitoring"


def monitoring_addons(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Every object in the add-ons folder (``__source__`` = its file), sorted by file name."""
    root = Path(folder) if folder else ADDONS_DIR
    objects: list[dict[str, Any]] = []
    for path in sorted(root.glob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        objects += [{**d, "__source__": str(path)} for d in docs if isinstance(d, dict)]
    return objects


def prometheus_rules(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The ``PrometheusRule`` objects of the add-ons."""
    return [o for o in monitoring_addons(folder) if o.get("kind") == "PrometheusRule"]


def grafana_dashboards(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Dashboard JSON by file name, from the ConfigMaps the Grafana sidecar picks up.

    Raises:
        ConfigError: a dashboard is not valid JSON (named with its ConfigMap and key).
    """
    out: dict[str, dict[str, Any]] = {}
    for obj in monitoring_addons(folder):
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if obj.get("kind") != "ConfigMap" or str(labels.get("grafana_dashboard")) != "1":
            continue
        for key, text in (obj.get("data") or {}).items():
            try:
                out[key] = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{obj['__source__']}: data.{key} is not JSON ({exc})") from None
    return out


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL) of every panel target, rows included."""
    rows: list[tuple[str, str, str]] = []
    panels = list(dashboard.get("panels") or [])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels") or []  # collapsed rows hold their panels
        for target in panel.get("targets") or []:
            if target.get("expr"):
                rows.append((str(panel.get("title")), str(target.get("refId")), target["expr"]))
    return rows
