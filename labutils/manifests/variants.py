"""Every variant of the rendered lab a notebook or drill needs, rendered in one place.

A variant is ``manifests/`` + ``lab.yaml`` with a few knobs changed (zones, starting groups,
route weights), optionally without the zones' HPAs (a measurement at a fixed size) or with the
HPA ``behavior`` timings scaled for a short drill. Everything else (model, GPU, metric, target,
bounds) stays what ``lab.yaml`` says, so a variant never teaches a different deployment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from labutils.config import LabConfig, load_config
from labutils.errors import ConfigError
from labutils.manifests.render import RENDER_HEADER, render

__all__ = ["render_variant", "scale_behavior_timings"]


def scale_behavior_timings(behavior: dict[str, Any], factor: float) -> dict[str, Any]:
    """Multiply an HPA ``behavior``'s stabilization windows and policy periods by ``factor``.

    Windows are rounded to whole seconds and periods kept at least 1 s (the API's minimum,
    ``HPAScalingPolicy.periodSeconds`` > 0). Changes ``behavior`` in place and returns it.
    """
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior.get(direction) or {}
        if "stabilizationWindowSeconds" in rules:
            rules["stabilizationWindowSeconds"] = round(
                rules["stabilizationWindowSeconds"] * factor
            )
        for policy in rules.get("policies") or []:
            policy["periodSeconds"] = max(1, round(policy["periodSeconds"] * factor))
    return behavior


def render_variant(
    out_dir: str | Path,
    *,
    zones: Sequence[str] | None = None,
    replicas: int | None = None,
    route_weights: Mapping[str, int] | None = None,
    hpa: bool = True,
    hpa_time_scale: float = 1.0,
    config: LabConfig | None = None,
) -> Path:
    """Render a variant of the lab into ``out_dir`` and return the folder.

    Args:
        zones: a subset of ``lab.yaml``'s zones.
        replicas: groups each LWS starts with (default: ``lab.yaml``'s).
        route_weights: new HTTPRoute weights per zone.
        hpa: ``False`` leaves the zones' HPAs out (the groups stay at their starting size).
        hpa_time_scale: multiply the HPA behavior windows and periods (drills; 1 = as is).
        config: start from this config instead of ``manifests/lab.yaml``.

    Raises:
        ConfigError: an unknown zone, or a non-positive ``hpa_time_scale``.
    """
    cfg = config or load_config()
    chosen = tuple(zones) if zones else cfg.zones
    unknown = sorted({*chosen, *(route_weights or {})} - set(cfg.zones))
    if unknown:
        raise ConfigError(f"zones {unknown} not in lab.yaml; choose from: {', '.join(cfg.zones)}")
    if not hpa_time_scale > 0:
        raise ConfigError(f"hpa_time_scale={hpa_time_scale}: must be > 0")
    changes: dict[str, Any] = {"zones": chosen}
    if replicas is not None:
        changes["replicas"] = replicas
    if route_weights is not None:
        changes["route_weights"] = {k: int(v) for k, v in route_weights.items()}
    out = Path(out_dir)
    render(dataclasses.replace(cfg, **changes), out)
    for path in sorted((out / "zones").glob("*/hpa.yaml")):
        if not hpa:
            path.unlink()
            continue
        if hpa_time_scale == 1.0:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            scale_behavior_timings((doc.get("spec") or {}).get("behavior") or {}, hpa_time_scale)
        header = RENDER_HEADER.format(source="zone/hpa.yaml")
        note = f"# HPA behavior timings x {hpa_time_scale:g} for a lab drill (render_variant)\n"
        path.write_text(header + note + yaml.safe_dump_all(docs, sort_keys=False))
    return out
