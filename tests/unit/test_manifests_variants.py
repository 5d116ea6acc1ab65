"""labutils.manifests.variants: the lab's variants, rendered from manifests/ + lab.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labutils.config import load_config
from labutils.errors import ConfigError
from labutils.manifests.variants import render_variant


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _behavior(out: Path, zone: str) -> dict:
    (hpa,) = _docs(out / "zones" / zone / "hpa.yaml")
    return hpa["spec"]["behavior"]


def test_drill_variant_scales_only_the_hpa_timings(tmp_path: Path) -> None:
    cfg = load_config()
    zone = cfg.zones[0]
    plain = render_variant(tmp_path / "plain")
    fast = render_variant(tmp_path / "fast", zones=[zone], replicas=1, hpa_time_scale=0.05)
    assert sorted(p.name for p in (fast / "zones").iterdir()) == [zone]
    before, after = _behavior(plain, zone), _behavior(fast, zone)
    window = before["scaleDown"]["stabilizationWindowSeconds"]
    assert after["scaleDown"]["stabilizationWindowSeconds"] == round(window * 0.05)
    for old, new in zip(before["scaleUp"]["policies"], after["scaleUp"]["policies"], strict=True):
        assert new["periodSeconds"] == max(1, round(old["periodSeconds"] * 0.05))
        assert new["value"] == old["value"]  # only timings change
    (lws,) = [
        d for d in _docs(fast / "zones" / zone / "lws.yaml") if d["kind"] == "LeaderWorkerSet"
    ]
    assert lws["spec"]["replicas"] == 1


def test_fixed_size_variant_has_no_hpa_and_weights_reach_the_route(tmp_path: Path) -> None:
    cfg = load_config()
    weights = {cfg.zones[0]: 70, cfg.zones[1]: 30}
    out = render_variant(tmp_path / "v", hpa=False, route_weights=weights)
    assert not list(out.rglob("hpa.yaml"))
    routes = [d for p in out.rglob("*.yaml") for d in _docs(p) if d.get("kind") == "HTTPRoute"]
    refs = {r["name"]: r.get("weight", 1) for rule in routes[0]["spec"]["rules"]
            for r in rule["backendRefs"]}  # fmt: skip
    assert sorted(refs.values(), reverse=True)[:2] == [70, 30]


def test_unknown_zone_and_bad_scale_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not in lab\.yaml; choose from"):
        render_variant(tmp_path / "a", zones=["mars-1a"])
    with pytest.raises(ConfigError, match=r"not in lab\.yaml"):
        render_variant(tmp_path / "b", route_weights={"mars-1a": 1})
    with pytest.raises(ConfigError, match="must be > 0"):
        render_variant(tmp_path / "c", hpa_time_scale=0)
