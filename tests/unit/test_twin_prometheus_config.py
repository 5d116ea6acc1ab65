"""The twin's Prometheus configuration: PodMonitor -> scrape jobs as prometheus-operator writes
them, leader pods -> file-SD targets as Kubernetes SD sees them, PrometheusRule -> rule files;
`promtool` checks what is generated (skipped where the Debian package is missing)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labutils.config import manifests_dir
from labutils.errors import TwinError
from labutils.metrics.addons import prometheus_rules
from labutils.targets.twin.prometheus import (
    LeaderPod,
    duration_s,
    format_duration,
    pod_monitor_jobs,
    promtool_binary,
    render_config,
    rule_files,
    sanitize_label_name,
    target_groups,
)

PODMONITOR = yaml.safe_load((manifests_dir() / "monitoring" / "podmonitor.yaml").read_text())
PROMTOOL = promtool_binary()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


def _leader(**over: Any) -> LeaderPod:
    fields: dict[str, Any] = {
        "namespace": "vllm-lab", "name": "vllm-us-west-2a-0", "lws": "vllm-us-west-2a",
        "group_index": 0, "phase": "Running", "ready": True, "port": 41000,
        "container": "vllm", "ports": (("http", 8000, "TCP"),),
        "labels": (("app.kubernetes.io/name", "vllm"),
                   ("vllm-lws-lab.io/zone", "us-west-2a")),
    }  # fmt: skip
    fields.update(over)
    return LeaderPod(**fields)


def _by_target(relabel: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["target_label"]: r for r in relabel if "target_label" in r}


def test_lab_podmonitor_becomes_the_operators_scrape_job(tmp_path: Path) -> None:
    (job,) = pod_monitor_jobs(PODMONITOR, sd_file=tmp_path / "t.json")
    assert job["job_name"] == "podMonitor/vllm-lab/vllm/0"
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "15s"  # the PodMonitor's interval, time scale 1
    relabel = job["relabel_configs"]
    keeps = [r for r in relabel if r.get("action") == "keep"]
    # selector labels, sorted by key, on the sanitized pod label + labelpresent meta labels
    assert {"action": "keep", "regex": "(vllm);true", "source_labels": [
        "__meta_kubernetes_pod_label_app_kubernetes_io_name",
        "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name"]} in keeps  # fmt: skip
    worker = "leaderworkerset_sigs_k8s_io_worker_index"
    assert {"action": "keep", "regex": "(0);true", "source_labels": [
        f"__meta_kubernetes_pod_label_{worker}",
        f"__meta_kubernetes_pod_labelpresent_{worker}"]} in keeps  # fmt: skip
    assert {"action": "keep", "regex": "http",
            "source_labels": ["__meta_kubernetes_pod_container_port_name"]} in keeps  # fmt: skip
    assert {"action": "drop", "regex": "(Failed|Succeeded)",
            "source_labels": ["__meta_kubernetes_pod_phase"]} in relabel  # fmt: skip
    targets = _by_target(relabel)
    assert targets["namespace"]["source_labels"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"]["source_labels"] == ["__meta_kubernetes_pod_name"]
    assert targets["container"]["source_labels"] == ["__meta_kubernetes_pod_container_name"]
    assert targets["job"]["replacement"] == "vllm-lab/vllm"
    assert targets["endpoint"]["replacement"] == "http"
    # without podTargetLabels no pod label (zone, LWS name) becomes a series label
    assert not any(t.startswith(("leaderworkerset", "vllm_lws_lab")) for t in targets)


def test_pod_target_labels_and_relabelings_are_carried(tmp_path: Path) -> None:
    monitor = yaml.safe_load(yaml.safe_dump(PODMONITOR))
    monitor["spec"]["podTargetLabels"] = ["leaderworkerset.sigs.k8s.io/name",
                                          "vllm-lws-lab.io/zone"]  # fmt: skip
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"] = [
        {"sourceLabels": ["__meta_kubernetes_pod_label_vllm_lws_lab_io_zone"],
         "targetLabel": "zone", "action": "Replace"}]  # fmt: skip
    (job,) = pod_monitor_jobs(monitor, sd_file=tmp_path / "t.json", time_scale=0.2)
    targets = _by_target(job["relabel_configs"])
    assert targets["leaderworkerset_sigs_k8s_io_name"] == {
        "source_labels": ["__meta_kubernetes_pod_label_leaderworkerset_sigs_k8s_io_name"],
        "target_label": "leaderworkerset_sigs_k8s_io_name", "regex": "(.+)",
        "replacement": "${1}"}  # fmt: skip
    assert "vllm_lws_lab_io_zone" in targets
    assert targets["zone"]["action"] == "replace"  # the operator lower-cases actions
    assert job["relabel_configs"][-1]["target_label"] == "zone"  # user relabelings come last
    assert job["scrape_interval"] == "3s"  # 15 s x time scale 0.2


def test_scrape_interval_override_wins(tmp_path: Path) -> None:
    (job,) = pod_monitor_jobs(PODMONITOR, sd_file=tmp_path / "t.json", interval_s=0.5)
    assert job["scrape_interval"] == "500ms"


def test_targets_carry_kubernetes_sd_meta_labels() -> None:
    (group,) = target_groups([_leader()])
    assert group["targets"] == ["127.0.0.1:41000"]
    labels = group["labels"]
    assert labels["__meta_kubernetes_pod_name"] == "vllm-us-west-2a-0"
    assert labels["__meta_kubernetes_pod_container_port_name"] == "http"
    assert labels["__meta_kubernetes_pod_container_port_number"] == "8000"
    # the LWS webhook's labels next to the template's
    assert labels["__meta_kubernetes_pod_label_leaderworkerset_sigs_k8s_io_name"] == (
        "vllm-us-west-2a"
    )
    assert labels["__meta_kubernetes_pod_label_leaderworkerset_sigs_k8s_io_worker_index"] == "0"
    assert labels["__meta_kubernetes_pod_labelpresent_vllm_lws_lab_io_zone"] == "true"


def test_a_pod_without_address_is_no_target() -> None:
    assert target_groups([_leader(port=None, phase="Pending")]) == []


def test_label_names_and_durations() -> None:
    assert sanitize_label_name("leaderworkerset.sigs.k8s.io/group-index") == (
        "leaderworkerset_sigs_k8s_io_group_index"
    )
    assert duration_s("1m30s") == 90.0
    assert duration_s("500ms") == 0.5
    assert format_duration(6.0) == "6s"
    assert format_duration(1.5) == "1500ms"
    with pytest.raises(TwinError, match="not a duration"):
        duration_s("1.5m")


def test_rule_for_windows_scale_with_the_twin() -> None:
    files = rule_files(prometheus_rules(), time_scale=0.1)
    (text,) = files.values()
    rules = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}
    assert rules["VllmZoneNoReadyLeader"]["for"] == "6s"  # 1m x 0.1
    assert rules["VllmQueueGrowing"]["for"] == "30s"  # 5m x 0.1


@needs_promtool
def test_promtool_accepts_the_generated_config_and_rules(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    files = rule_files(prometheus_rules(), time_scale=0.1)
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    (tmp_path / "targets.json").write_text("[]")
    jobs = pod_monitor_jobs(PODMONITOR, sd_file=tmp_path / "targets.json", time_scale=0.1)
    (tmp_path / "prometheus.yml").write_text(render_config(jobs, paths, interval_s=1.5))
    out = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 rules found" in out.stdout
