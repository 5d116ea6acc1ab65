"""PromQL answers as tidy frames, errors that name the query and URL; the monitoring add-ons
(PrometheusRule, Grafana dashboard ConfigMap) are valid and agree with the lab's queries."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from labutils.errors import MetricsError
from labutils.metrics.addons import (
    ADDONS_DIR,
    dashboard_queries,
    grafana_dashboards,
    monitoring_addons,
    prometheus_rules,
)
from labutils.metrics.prometheus import (
    api_body,
    lab_queries,
    result_frame,
    rules_frame,
    targets_frame,
    with_zone,
)
from labutils.targets.twin.prometheus import promtool_binary

URL = "http://127.0.0.1:9"

# Bodies in the shape of Prometheus's HTTP API documentation (/api/v1/query, query_range).
VECTOR = {"resultType": "vector", "result": [
    {"metric": {"__name__": "up", "pod": "vllm-us-west-2a-1"}, "value": [1700000000.5, "1"]},
    {"metric": {"__name__": "up", "pod": "vllm-us-west-2a-0"}, "value": [1700000000.5, "NaN"]},
]}  # fmt: skip
MATRIX = {"resultType": "matrix", "result": [
    {"metric": {"zone": "us-west-2a"}, "values": [[10, "1.5"], [25, "+Inf"]]},
]}  # fmt: skip


def test_vector_and_matrix_become_rows_with_label_columns() -> None:
    frame = result_frame(VECTOR)
    assert list(frame.columns) == ["time_s", "value", "__name__", "pod"]
    assert list(frame["pod"]) == ["vllm-us-west-2a-0", "vllm-us-west-2a-1"]
    assert math.isnan(frame["value"][0]) and frame["value"][1] == 1.0
    frame = result_frame(MATRIX)
    assert list(frame["time_s"]) == [10.0, 25.0]
    assert math.isinf(frame["value"][1])
    scalar = result_frame({"resultType": "scalar", "result": [5, "2"]})
    assert scalar.to_dict("records") == [{"time_s": 5.0, "value": 2.0}]
    empty = result_frame({"resultType": "vector", "result": []})
    assert empty.empty and list(empty.columns) == ["time_s", "value"]


# /api/v1/rules and /api/v1/targets data as Prometheus 2.42 (Debian 12) returns them (abridged)
RULES = {"groups": [{
    "name": "vllm-lab.fleet", "file": "/state/prometheus/rules/monitoring-vllm-lab-alerts.yaml",
    "interval": 3, "limit": 0, "evaluationTime": 0.005, "lastEvaluation": "2026-12-04T20:06:52Z",
    "rules": [{
        "state": "firing", "name": "VllmZoneNoReadyLeader", "query": "count by (zone) (up)",
        "duration": 6, "keepFiringFor": 0, "labels": {"severity": "critical"},
        "annotations": {"summary": "s"}, "alerts": [], "health": "ok",
        "evaluationTime": 0.001, "lastEvaluation": "2026-12-04T20:06:52Z", "type": "alerting",
    }],
}]}  # fmt: skip
TARGETS = {"activeTargets": [{
    "discoveredLabels": {"__address__": "127.0.0.1:33285"},
    "labels": {"container": "vllm", "endpoint": "http", "instance": "127.0.0.1:33285",
               "job": "vllm-lab/vllm", "namespace": "vllm-lab", "pod": "vllm-us-west-2c-1"},
    "scrapePool": "podMonitor/vllm-lab/vllm/0", "scrapeUrl": "http://127.0.0.1:33285/metrics",
    "globalUrl": "http://vm:33285/metrics", "lastError": "",
    "lastScrape": "2026-12-04T20:06:52.614333409Z", "lastScrapeDuration": 0.004,
    "health": "up", "scrapeInterval": "1m30s", "scrapeTimeout": "10s",
}], "droppedTargets": []}  # fmt: skip


def test_rules_and_targets_become_rows() -> None:
    (rule,) = rules_frame(RULES).to_dict("records")
    assert rule["name"] == "VllmZoneNoReadyLeader" and rule["type"] == "alerting"
    assert (rule["interval_s"], rule["for_s"], rule["state"]) == (3.0, 6.0, "firing")
    assert list(rules_frame({"groups": []}).columns)[:3] == ["group", "interval_s", "name"]
    (target,) = targets_frame(TARGETS).to_dict("records")
    assert (target["pod"], target["job"], target["health"]) == ("vllm-us-west-2c-1",
                                                                "vllm-lab/vllm", "up")  # fmt: skip
    assert target["scrape_interval_s"] == 90.0
    assert target["last_scrape_s"] == pytest.approx(1796414812.614333, abs=1e-3)
    assert targets_frame({"activeTargets": []}).empty


def test_a_refused_query_names_query_and_url() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"}
    with pytest.raises(MetricsError, match=r"127\.0\.0\.1:9 refused 'sum\(': bad_data: parse"):
        api_body(body, query="sum(", url=URL)


def test_prometheus_warnings_are_not_swallowed() -> None:
    body = {"status": "success", "data": VECTOR, "warnings": ["query touched a gap"]}
    with pytest.warns(UserWarning, match="query touched a gap"):
        api_body(body, query="up", url=URL)


def test_lab_queries_group_by_zone_from_the_pod_name() -> None:
    queries = lab_queries("team7", window="2m")
    assert set(queries) == {"request_rate", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99",
                            "queue_depth", "kv_cache_usage", "ready_leaders"}  # fmt: skip
    assert queries["ttft_p99"] == (
        "histogram_quantile(0.99, sum by (le, zone) ("
        + with_zone('rate(vllm:time_to_first_token_seconds_bucket{namespace="team7"}[2m])')
        + "))"
    )
    assert 'job="team7/vllm"' in queries["ready_leaders"]


def test_dashboard_configmap_is_what_the_grafana_sidecar_loads() -> None:
    (cm,) = [o for o in monitoring_addons() if o["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"  # the chart's default label
    (dashboard,) = grafana_dashboards().values()
    assert dashboard["uid"] and dashboard["title"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace"]
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(set(titles)) == len(titles) == 6
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def test_every_panel_query_is_a_lab_query() -> None:
    (dashboard,) = grafana_dashboards().values()
    panel_queries = [expr for _, _, expr in dashboard_queries(dashboard)]
    expected = lab_queries("$namespace", window="$__rate_interval")
    assert sorted(panel_queries) == sorted(expected.values())


def test_prometheus_rule_is_selected_by_kube_prometheus_stack() -> None:
    (rule,) = prometheus_rules()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"]  # ruleSelector: release=<helm release>
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"VllmZoneNoReadyLeader", "VllmQueueGrowing", "VllmKvCacheNearFull",
                      "VllmHighErrorRate"}  # fmt: skip
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical")
            assert r["annotations"]["summary"]


@pytest.mark.skipif(promtool_binary() is None, reason="promtool not installed (prometheus)")
def test_promtool_check_rules_passes_on_the_shipped_rules(tmp_path: Path) -> None:
    (rule,) = prometheus_rules()
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = subprocess.run([str(promtool_binary()), "check", "rules", str(path)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 4 rules found" in out.stdout


def test_addon_files_are_plain_objects() -> None:
    for path in sorted(ADDONS_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vllm-lws-lab"
    for text in yaml.safe_load((ADDONS_DIR / "grafana-dashboard.yaml").read_text())[
        "data"
    ].values():
        json.loads(text)
