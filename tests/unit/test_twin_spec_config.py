"""Twin spec from manifests, and the HAProxy config generated from it (checked by haproxy -c)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from twin_fixtures import route, write_rendered, zone_objects

from labutils.errors import ConfigError, ManifestError, TwinError
from labutils.metrics.parse import sample_value
from labutils.targets.twin.haproxy import (
    STRATEGIES,
    HaproxyLayout,
    Slot,
    render_haproxy_config,
    success_codes_regex,
)
from labutils.targets.twin.spec import load_twin_spec, twin_spec_from_objects

HPA = {"minReplicas": 1, "maxReplicas": 4}


def _objects(weights: dict[str, int]) -> list[dict[str, object]]:
    objs: list[dict[str, object]] = []
    for zone in weights:
        objs += zone_objects(zone, 2, HPA)
    objs.append(route(weights, {"set": [{"name": "X-S", "value": "v"}]}))
    return objs


def test_spec_reads_zones_engine_gpu_health_weights_and_hpa() -> None:
    spec = twin_spec_from_objects(_objects({"us-west-2a": 70, "us-west-2b": 0}))
    a = spec.zone("us-west-2a")
    assert (a.lws, a.replicas, a.size, a.weight) == ("vllm-us-west-2a", 2, 2, 70)
    assert a.engine.tensor_parallel_size == 4 and a.engine.name == "llama-3.1-8b"
    assert a.gpu == "h100" and a.instance_type == "p5.48xlarge"
    assert (a.health.protocol, a.health.path, a.health.interval_s) == ("HTTP", "/health", 5.0)
    assert a.health.unhealthy_threshold == 2
    assert spec.zone("us-west-2b").weight == 0
    assert spec.headers.set == (("X-S", "v"),)
    assert spec.path_prefixes == ("/v1",)
    assert spec.hpa_for("vllm-us-west-2a") is not None
    assert spec.series_for("vllm_num_requests_waiting") == "vllm:num_requests_waiting"
    with pytest.raises(ConfigError, match="unknown zone 'x'; choose one of: us-west-2a"):
        spec.zone("x")


def test_spec_errors_name_the_object() -> None:
    objs = _objects({"us-west-2a": 1})
    lws = objs[0]
    lws["metadata"]["labels"] = {}  # type: ignore[index]
    with pytest.raises(ConfigError, match="LeaderWorkerSet/vllm-us-west-2a: missing label"):
        twin_spec_from_objects(objs)
    with pytest.raises(ConfigError, match="no LeaderWorkerSet"):
        twin_spec_from_objects([route({"a": 1})])


def test_adapter_rule_renames_series() -> None:
    rules = {"rules": [{"seriesQuery": 'vllm:kv_cache_usage_perc{pod!=""}',
                        "name": {"matches": "^vllm:(.*)$", "as": "lab_${1}"}}]}  # fmt: skip
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vllm-lab-adapter-rules"},
          "data": {"config.yaml": yaml.safe_dump(rules)}}  # fmt: skip
    spec = twin_spec_from_objects([*_objects({"us-west-2a": 1}), cm])
    assert spec.series_for("lab_kv_cache_usage_perc") == "vllm:kv_cache_usage_perc"


def test_load_twin_spec_reads_rendered_dir(tmp_path: Path) -> None:
    write_rendered(tmp_path, {"us-west-2a": 1, "us-west-2b": 3}, replicas=2, hpa=HPA)
    spec = load_twin_spec(tmp_path)
    assert [z.weight for z in spec.zones] == [1, 3]
    with pytest.raises(ManifestError, match="run 'labctl render'"):
        load_twin_spec(tmp_path / "missing")


def test_success_codes_regex() -> None:
    assert success_codes_regex("200") == "^(200)$"
    assert success_codes_regex("200-399") == "^(2[0-9][0-9]|3[0-9][0-9])$"
    assert success_codes_regex("200,202-204") == "^(200|202|203|204)$"
    with pytest.raises(TwinError):
        success_codes_regex("")


def _parts(
    tmp_path: Path, weights: dict[str, int] | None = None
) -> tuple[Any, HaproxyLayout, list[Slot]]:
    spec = twin_spec_from_objects(_objects(weights or {"us-west-2a": 1, "us-west-2b": 1}))
    zones = [z.zone for z in spec.zones]
    layout = HaproxyLayout(20000, {z: 20001 + i for i, z in enumerate(zones)}, 20010,
                           tmp_path / "h.sock", tmp_path / "zones.map")  # fmt: skip
    slots = [Slot(z.zone, f"{z.lws}-{g}", 30000 + g if g < 2 else None)
             for z in spec.zones for g in range(4)]  # fmt: skip
    return spec, layout, slots


def _render(tmp_path: Path, strategy: str, weights: dict[str, int]) -> str:
    spec, layout, slots = _parts(tmp_path, weights)
    return render_haproxy_config(spec, layout, slots, strategy=strategy, time_scale=0.2)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_generated_config_is_valid_haproxy(tmp_path: Path, strategy: str) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy not installed (make setup)")
    cfg = _render(tmp_path, strategy, {"us-west-2a": 70, "us-west-2b": 30, "us-west-2c": 0})
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    result = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "option http-no-delay" in cfg and "retry-on conn-failure" in cfg


def test_weighted_config_ranges_and_fallback(tmp_path: Path) -> None:
    cfg = _render(tmp_path, "weighted", {"us-west-2a": 70, "us-west-2b": 30, "us-west-2c": 0})
    assert "rand(100)" in cfg
    assert "acl lab_pick_us-west-2a var(txn.lab_draw) -m int 0:69" in cfg
    assert "acl lab_pick_us-west-2b var(txn.lab_draw) -m int 70:99" in cfg
    assert "lab_pick_us-west-2c" not in cfg  # weight 0: never drawn
    assert (
        "use_backend zone_us-west-2a if lab_pick_us-west-2a { nbsrv(zone_us-west-2a) gt 0 }" in cfg
    )
    assert "default_backend fallback" in cfg
    fallback = cfg.split("\nbackend fallback\n")[1]
    assert "vllm-us-west-2c-0" not in fallback and "vllm-us-west-2b-0" in fallback
    # health check from the Service annotations: 5 s x 0.2, thresholds 2/2, path /health
    assert "inter 1000ms fall 2 rise 2" in cfg and "option httpchk GET /health" in cfg
    assert "server vllm-us-west-2a-2 127.0.0.1:1 check disabled" in cfg
    assert (tmp_path / "zones.map").read_text().count("\n") == 12


def test_strict_and_pool_strategies(tmp_path: Path) -> None:
    strict = _render(tmp_path, "weighted-strict", {"us-west-2a": 1, "us-west-2b": 1})
    assert "nbsrv" not in strict and "default_backend unavailable" in strict
    pool = _render(tmp_path, "least-request", {"us-west-2a": 1, "us-west-2b": 1})
    assert "default_backend pool" in pool and "balance leastconn" in pool
    with pytest.raises(TwinError, match="choose one of: weighted"):
        _render(tmp_path, "random", {"us-west-2a": 1})


def test_sample_value_sums_labelled_samples() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="a"} 3.0\n'
        'vllm:num_requests_waiting{model_name="b"} 2.0\n'
        "vllm:num_requests_waiting_total 100\n"
    )
    assert sample_value(text, "vllm:num_requests_waiting") == 5.0
    assert sample_value(text, "vllm:num_requests_running") is None


def test_sample_value_reads_a_sample_with_a_timestamp_as_its_value() -> None:
    # The exposition format allows "name{labels} value timestamp_ms"; the twin's old prefix
    # parser took the last field (the timestamp) as the value; it now reads through the one parser.
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="a"} 3 1700000000000\n'
        'vllm:num_requests_waiting{model_name="b"} 4.5 1700000000000\n'
    )
    assert sample_value(text, "vllm:num_requests_waiting") == 7.5


def test_sample_value_on_real_vllm_scrape(data_dir: Path) -> None:
    text = (data_dir / "vllm-0.32.0-cpu-metrics.txt").read_text()
    assert sample_value(text, "vllm:num_requests_waiting") is not None
    assert sample_value(text, "vllm:kv_cache_usage_perc") is not None


def test_route_timeout_maps_to_haproxy(tmp_path: Path) -> None:
    objs = _objects({"us-west-2a": 1})
    objs[-1]["spec"]["rules"][0]["timeouts"] = {"request": "1m30s"}  # type: ignore[index]
    spec = twin_spec_from_objects(objs)
    assert spec.request_timeout_s == 90.0
    objs[-1]["spec"]["rules"][0]["timeouts"] = {"request": "ten"}  # type: ignore[index]
    with pytest.raises(ConfigError, match="HTTPRoute/vllm: timeouts duration 'ten'"):
        twin_spec_from_objects(objs)
    cfg = _render(tmp_path, "weighted", {"us-west-2a": 1})
    assert "timeout server 3600000ms" in cfg  # no timeouts.request: bounded at 1 h


def test_config_serves_its_generation_on_the_stats_port(tmp_path: Path) -> None:
    # The controller waits after a reload until the stats port answers the new generation.
    spec, layout, slots = _parts(tmp_path)
    for generation in (1, 7):
        cfg = render_haproxy_config(spec, layout, slots, generation=generation)
        stats = cfg.split("frontend stats", 1)[1].split("frontend gateway", 1)[0]
        assert f'string "{generation}" if {{ path /lab/config-generation }}' in stats
