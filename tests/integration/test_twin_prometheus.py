"""The twin's Prometheus end to end: targets labelled as the lab's PodMonitor labels them on a
cluster, the HPA's input equal to the prometheus-adapter rule evaluated by Prometheus, the KEDA
and dashboard queries evaluated, a broken ``metricsQuery`` breaking autoscaling visibly, and a
zone kill firing the zone alert. One twin (2 zones x 2 groups) for the module."""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from twin_fixtures import ENGINE, write_rendered
from twin_gateway_client import send_requests

from labutils import drills
from labutils.lessons import n02_routing as routing
from labutils.lessons import n04_autoscaling as autoscaling
from labutils.manifests import render
from labutils.metrics import prometheus as prom
from labutils.metrics.adapter import adapter_rules_from_objects, build_pods_query
from labutils.metrics.addons import dashboard_queries, grafana_dashboards
from labutils.targets.twin import TwinBackend

ZONES = {"us-west-2a": 1, "us-west-2b": 1}
METRIC = "vllm_num_requests_waiting"
HPA = {  # bounds fixed at 2: the HPA computes (and records) its input but never rescales
    "minReplicas": 2,
    "maxReplicas": 2,
    "metrics": [{"type": "Pods", "pods": {"metric": {"name": METRIC},
                                          "target": {"type": "AverageValue",
                                                     "averageValue": "5"}}}],
}  # fmt: skip
TIME_SCALE = 0.1  # the zone alert's `for: 1m` becomes 6 s
ADAPTER = Path("monitoring") / "prometheus-adapter-rules.yaml"


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TwinBackend, Path]]:
    root = tmp_path_factory.mktemp("prom")
    rendered = write_rendered(root / "rendered", ZONES, replicas=2, hpa=HPA)
    backend = TwinBackend(
        root / "state", engine=ENGINE, model_load_s=0.2, sync_period_s=3600.0,
        time_scale=TIME_SCALE, scrape_interval_s=0.5,
    )  # fmt: skip
    try:
        backend.up(rendered, timeout_s=60)
        backend.wait_scraped(timeout_s=30)
        yield backend, rendered
    finally:
        url = backend.prometheus_url if backend.running() else ""
        backend.down()
    assert backend.leftovers() == {"pids": [], "ports": []}
    if url:  # `twin down` leaves no listener: Prometheus's port is closed too
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def _load(url: str, count: int = 48) -> threading.Thread:
    # 16 concurrent 200-token requests on max-num-seqs 4 per leader: a queue builds for seconds
    thread = threading.Thread(
        target=lambda: asyncio.run(send_requests(url, count, concurrency=16, max_tokens=200)),
        daemon=True,
    )
    thread.start()
    return thread


def _hpa_rows(backend: TwinBackend, hpa: str, since_s: float) -> pd.DataFrame:
    rows = backend.hpa_events()
    return rows[(rows["hpa"] == hpa) & (rows["time_s"] >= since_s)].reset_index(drop=True)


def test_every_leader_is_a_target_labelled_as_on_the_cluster(twin: Any) -> None:
    backend, _ = twin
    body = backend.prometheus().get("targets", {"state": "active"})
    targets = body["data"]["activeTargets"]
    leaders = {g.group for g in backend.endpoints().groups}
    assert {t["labels"]["pod"] for t in targets} == leaders
    for target in targets:
        assert target["health"] == "up", target
        labels = target["labels"]
        # what prometheus-operator's PodMonitor job gives a cluster series
        assert labels["namespace"] == "vllm-lab"
        assert labels["container"] == "vllm"
        assert labels["endpoint"] == "http"
        assert labels["job"] == "vllm-lab/vllm"
    frame = prom.query(backend, "vllm:num_requests_waiting")
    assert sorted(frame["pod"]) == sorted(leaders)  # one series per group
    # the PodMonitor's relabelings put the zone and the LWS group on every series
    by_pod = {g.group: g for g in backend.endpoints().groups}
    for row in frame.itertuples():
        assert row.zone == by_pod[row.pod].zone, row
        assert row.lws == f"vllm-{row.zone}" and row.pod == f"{row.lws}-{row.group_index}"
    zoned = prom.query(backend, prom.with_zone('vllm:num_requests_waiting{namespace="vllm-lab"}'))
    assert {(r.pod, r.zone) for r in zoned.itertuples()} == {
        (g.group, g.zone) for g in backend.endpoints().groups
    }


def test_hpa_input_is_the_adapter_rule_evaluated_by_prometheus(twin: Any) -> None:
    backend, rendered = twin
    start = time.time()
    load = _load(backend.endpoints().zone_urls["us-west-2a"])
    time.sleep(1.5)  # a few scrapes into the queue
    for _ in range(3):
        backend.hpa_sync()
        time.sleep(0.4)
    load.join(60)
    rows = _hpa_rows(backend, "vllm-us-west-2a", start)
    assert len(rows) >= 3
    (rule, _) = adapter_rules_from_objects([yaml.safe_load((rendered / ADAPTER).read_text())])
    pods = ["vllm-us-west-2a-0", "vllm-us-west-2a-1"]
    expected_query = build_pods_query(rule, "vllm:num_requests_waiting", "vllm-lab", pods)
    seen_queue = False
    for record in rows.to_dict("records"):
        query = record[f"{METRIC}:query"]
        assert query == expected_query  # the rendered rule's metricsQuery, for the leaders
        inputs = record[f"{METRIC}:pods"]
        at_s = float(record[f"{METRIC}:eval_time_s"])
        assert record["scaling_active"]
        answer = prom.query(backend, query, time_s=at_s)
        again = {r.pod: math.trunc(r.value * 1000) / 1000 for r in answer.itertuples()}
        if again != inputs:
            # A scrape stamped just before at_s but stored just after the HPA's query: the
            # same query 50 ms earlier must then give what the HPA saw.
            earlier = prom.query(backend, query, time_s=at_s - 0.05)
            again = {r.pod: math.trunc(r.value * 1000) / 1000 for r in earlier.itertuples()}
        assert again == inputs
        usage = record[f"{METRIC}:usage"]
        assert usage == pytest.approx(sum(inputs.values()) / len(inputs), abs=1e-3)
        # what notebook 04 shows for a logged decision: the same query, time and values
        shown = autoscaling.decision_inputs(backend, "vllm-us-west-2a", record["time_s"])
        assert shown is not None and shown.metric == METRIC
        assert (shown.query, shown.eval_time_s, shown.pods) == (query, at_s, inputs)
        seen_queue = seen_queue or max(inputs.values()) > 0
    assert seen_queue, "the load never queued a request: the comparison proved little"


def test_keda_scaledobject_query_on_the_twins_prometheus(twin: Any, tmp_path: Path) -> None:
    backend, _ = twin
    render(out_dir=tmp_path / "real")  # the shipped ScaledObjects, rendered for lab.yaml
    at_s = time.time()
    waiting = prom.query(backend, 'vllm:num_requests_waiting{namespace="vllm-lab"}', time_s=at_s)
    for zone in ZONES:
        obj = yaml.safe_load((tmp_path / "real" / "optional" / "keda" /
                              f"scaledobject-{zone}.yaml").read_text())  # fmt: skip
        (trigger,) = obj["spec"]["triggers"]
        answer = prom.query(backend, trigger["metadata"]["query"], time_s=at_s)
        # KEDA's prometheus scaler reads one element; more is an error (kedacore/keda
        # pkg/scalers/prometheus_scaler.go ExecutePromQuery: "returned multiple elements")
        assert len(answer) == 1, answer
        mine = waiting[waiting["pod"].str.startswith(f"vllm-{zone}-")]["value"]
        assert answer["value"][0] == pytest.approx(mine.mean())


def test_dashboard_panels_evaluate_per_zone(twin: Any) -> None:
    backend, _ = twin
    (dashboard,) = grafana_dashboards().values()
    for title, ref, expr in dashboard_queries(dashboard):
        promql = expr.replace("$namespace", "vllm-lab").replace("$__rate_interval", "1m")
        frame = prom.query(backend, promql, warn_empty=False)  # MetricsError if refused
        assert set(frame.get("zone", [])) == set(ZONES), (title, ref, frame)


def test_alerting_rules_load_and_evaluate(twin: Any) -> None:
    backend, _ = twin
    groups = backend.prometheus().get("rules", {})["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"VllmZoneNoReadyLeader", "VllmQueueGrowing",
                                          "VllmKvCacheNearFull", "VllmHighErrorRate"}  # fmt: skip
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


@pytest.mark.parametrize(
    ("wrong", "reported"),
    [
        # a PromQL syntax error: Prometheus refuses, the adapter answers "unable to fetch"
        ("sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>",
         "unable to fetch metrics from custom metrics API"),
        # valid PromQL without the pod grouping: no value matches a pod
        ("sum(<<.Series>>{<<.LabelMatchers>>})", "no metrics returned from custom metrics API"),
    ],
)  # fmt: skip
def test_a_wrong_metrics_query_breaks_autoscaling_visibly(
    twin: Any, wrong: str, reported: str
) -> None:
    backend, rendered = twin
    path = rendered / ADAPTER
    original = path.read_text()
    config = yaml.safe_load(original)
    rules = yaml.safe_load(config["data"]["config.yaml"])
    rules["rules"][0]["metricsQuery"] = wrong
    config["data"]["config.yaml"] = yaml.safe_dump(rules)
    try:
        path.write_text(yaml.safe_dump(config))
        backend.up(rendered, timeout_s=30)  # applied live, as kubectl apply would
        start = time.time()
        backend.hpa_sync()
        (row,) = _hpa_rows(backend, "vllm-us-west-2a", start).to_dict("records")
        error = row[f"{METRIC}:error"]
        assert error.startswith(f"unable to get metric {METRIC}: ") and reported in error
        assert not row["scaling_active"]
        assert row["scaling_active_reason"] == "FailedGetPodsMetric"
        assert row["desired_replicas"] == row["current_replicas"]  # never a silent 0
        events = backend.events()
        warnings = events[(events["kind"] == "hpa-warning") & (events["time_s"] >= start)]
        assert set(warnings["reason"]) == {"FailedGetPodsMetric"}
        assert reported in warnings["message"].iloc[0]
        # notebook 04's summary of them, and no query to show for that sync
        summary = autoscaling.metric_warnings(backend, since_s=start).set_index("object")
        assert set(summary.index) == {"vllm-us-west-2a", "vllm-us-west-2b"}  # the same rule
        mine = summary.loc["vllm-us-west-2a"]
        assert mine["syncs"] >= 1 and reported in mine["message"] and mine["first_s"] >= 0
        assert autoscaling.decision_inputs(backend, "vllm-us-west-2a", row["time_s"]) is None
    finally:
        path.write_text(original)
        backend.up(rendered, timeout_s=30)
    start = time.time()
    backend.hpa_sync()
    (row,) = _hpa_rows(backend, "vllm-us-west-2a", start).to_dict("records")
    assert row["scaling_active"]  # the correct rule serves the metric again


def test_zone_kill_fires_the_zone_alert_within_its_for_window(twin: Any) -> None:
    backend, _ = twin
    for_s = 60 * TIME_SCALE
    killed = time.time()
    backend.fail(zone="us-west-2b", mode="kill")
    try:
        firing = prom.wait_for_alert(backend, "VllmZoneNoReadyLeader", zone="us-west-2b",
                                     timeout_s=for_s + 20, poll_s=0.25)  # fmt: skip
        fired = time.time()
        now = prom.alerts(backend)
    finally:
        backend.restore(zone="us-west-2b")
    assert set(firing["namespace"]) == {"vllm-lab"}
    zone_alerts = now[now["alertname"] == "VllmZoneNoReadyLeader"]
    assert set(zone_alerts["zone"]) == {"us-west-2b"}  # the healthy zone does not alert
    active_at = float(firing["active_at_s"].iloc[0])
    assert killed - 1 <= active_at and fired - active_at >= for_s - 0.5  # pending for `for:`
    assert fired - killed <= for_s + 10, f"fired {fired - killed:.1f} s after the kill"


def test_zone_outage_alert_timing_from_prometheus_and_resolution(twin: Any) -> None:
    backend, _ = twin
    timing = routing.alert_timing(backend)
    assert timing.for_s == pytest.approx(60 * TIME_SCALE)  # the rule's 1m, scaled as loaded
    assert timing.scrape_interval_s == 0.5
    # an alert left by another test's kill would be taken for this one's: wait it out
    prom.wait_for_no_alert(backend, routing.ZONE_ALERT, timeout_s=60, poll_s=0.25)
    with drills.zone_outage(backend, "us-west-2a", ready_timeout_s=60) as killed_at_s:
        wait_s = 2 * timing.fires_within_s + 30
        firing = prom.wait_for_alert(backend, routing.ZONE_ALERT, zone="us-west-2a",
                                     timeout_s=wait_s, poll_s=0.25)  # fmt: skip
        seen_at_s = time.time()
        now = prom.alerts(backend)
    message = routing.check_zone_alert(firing, now, zone="us-west-2a", killed_at_s=killed_at_s,
                                       seen_at_s=seen_at_s, timing=timing)  # fmt: skip
    assert message.startswith("OK")
    # the zone is back (zone_outage waited until ready) and Prometheus sees it: resolved
    assert prom.wait_for_no_alert(backend, routing.ZONE_ALERT, zone="us-west-2a",
                                  timeout_s=60, poll_s=0.25) >= 0  # fmt: skip
