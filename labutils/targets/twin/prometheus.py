"""The twin's Prometheus: scrape configs from the lab's PodMonitors, targets, rules, process.

A real Prometheus server (Debian's ``prometheus`` package) runs next to HAProxy, on 127.0.0.1
only, with its data in ``<state-dir>/prometheus/`` and a short retention. It is configured the
way prometheus-operator configures the cluster's Prometheus from the same objects:

- every ``PodMonitor`` endpoint becomes a scrape job with the operator's relabelings
  (prometheus-operator v0.93.0 ``pkg/prometheus/promcfg.go`` ``generatePodMonitorConfig``):
  job name ``podMonitor/<ns>/<name>/<i>``, the ``Failed``/``Succeeded`` phase filter, one
  ``keep`` per selector label on ``__meta_kubernetes_pod_label_<sanitized>`` and
  ``..._labelpresent_...``, a ``keep`` on the endpoint's port name, then the target labels
  ``namespace``, ``container``, ``pod``, each ``podTargetLabels`` entry (name sanitized:
  ``[^a-zA-Z0-9_]`` -> ``_``), ``job`` = ``<ns>/<name>`` (or ``jobLabel``), ``endpoint`` = the
  port name, and the endpoint's own ``relabelings``/``metricRelabelings``. The sharding
  relabelings of a one-shard Prometheus keep every target and are left out.
- Instead of the Kubernetes API, file-based service discovery lists the leader pods with the
  meta labels Prometheus's Kubernetes SD (``role: pod``) gives them (prometheus v2.42
  ``discovery/kubernetes/pod.go``): one target per container port, none for a pod without an IP
  (a group whose engine is not listening), pod labels = the LWS leader template's labels plus
  those LeaderWorkerSet adds (``leaderworkerset.sigs.k8s.io/name``, ``group-index``,
  ``worker-index: "0"``, ``group-key``). The address is the engine's 127.0.0.1 port.
- ``PrometheusRule`` ``spec.groups`` become rule files (one per object, as the operator writes
  them), with ``for``/``interval`` durations multiplied by the twin's time scale.

The scrape interval is the PodMonitor endpoint's ``interval`` (the cluster's Prometheus default
of 30 s when unset) times the time scale, unless the twin is given ``scrape_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from labutils.errors import TwinError
from labutils.kube.labels import LWS_GROUP_INDEX_LABEL, LWS_NAME_LABEL, LWS_WORKER_INDEX_LABEL
from labutils.metrics.parse import sample_value
from labutils.targets.twin.ports import free_ports
from labutils.targets.twin.state import record_of

__all__ = [
    "DEFAULT_INTERVAL_S",
    "RETENTION",
    "LeaderPod",
    "PrometheusServer",
    "duration_s",
    "format_duration",
    "pod_monitor_jobs",
    "prometheus_binary",
    "promtool_binary",
    "render_config",
    "rule_files",
    "sanitize_label_name",
    "target_groups",
]

RETENTION = "2h"
DEFAULT_INTERVAL_S = 30.0  # prometheus-operator's scrapeInterval / evaluationInterval default
_MIN_INTERVAL_S = 0.2
_LWS_GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_S = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0,
           "s": 1.0, "ms": 0.001}  # fmt: skip


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


def prometheus_binary() -> str:
    """Path of ``prometheus`` (Debian's package, installed by ``scripts/setup-system.sh``)."""
    path = _binary("prometheus")
    if not path:
        raise TwinError(
            "prometheus not found; install it with 'make setup' (apt-get install prometheus)"
        )
    return path


def promtool_binary() -> str | None:
    """Path of ``promtool`` (same package), or ``None``."""
    return _binary("promtool")


def sanitize_label_name(name: str) -> str:
    """A Kubernetes label key as a Prometheus label name (the operator's ``sanitizeLabelName``)."""
    return _INVALID_LABEL_CHARS.sub("_", name)


def duration_s(text: Any, where: str = "duration") -> float:
    """A Prometheus/Kubernetes duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    value = str(text).strip()
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise TwinError(f"{where}: {value!r} is not a duration like 30s, 1m or 500ms")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (whole milliseconds: Prometheus takes no fractions)."""
    ms = max(0, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


# --- targets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LeaderPod:
    """A group leader as Kubernetes service discovery would see its pod."""

    namespace: str
    name: str  # <lws>-<g>
    lws: str
    group_index: int
    phase: str  # Pending | Running | Failed | Succeeded
    ready: bool
    port: int | None  # the engine's local port; None: no IP yet (no target)
    container: str
    ports: tuple[tuple[str, int, str], ...]  # (name, containerPort, protocol) of the container
    labels: tuple[tuple[str, str], ...]  # the pod template's labels


def _pod_labels(pod: LeaderPod) -> dict[str, str]:
    # LeaderWorkerSet's pod webhook (sigs.k8s.io/lws v0.10.0 pkg/webhooks/pod_webhook.go) adds
    # these to every leader; group-key is a hash LWS derives per group (any stable value here).
    key = hashlib.sha1(f"{pod.namespace}/{pod.name}".encode()).hexdigest()
    return {
        **dict(pod.labels),
        LWS_NAME_LABEL: pod.lws,
        LWS_GROUP_INDEX_LABEL: str(pod.group_index),
        LWS_WORKER_INDEX_LABEL: "0",
        _LWS_GROUP_KEY_LABEL: key,
    }


def target_groups(pods: Iterable[LeaderPod]) -> list[dict[str, Any]]:
    """File-SD target groups with the meta labels of Prometheus's Kubernetes SD (role pod)."""
    groups: list[dict[str, Any]] = []
    for pod in pods:
        if not pod.port:
            continue  # "PodIP can be empty when a pod is starting or has been evicted"
        meta = {
            "__meta_kubernetes_namespace": pod.namespace,
            "__meta_kubernetes_pod_name": pod.name,
            "__meta_kubernetes_pod_ip": "127.0.0.1",
            "__meta_kubernetes_pod_ready": "true" if pod.ready else "false",
            "__meta_kubernetes_pod_phase": pod.phase,
            "__meta_kubernetes_pod_node_name": "local",
            "__meta_kubernetes_pod_host_ip": "127.0.0.1",
            "__meta_kubernetes_pod_uid": hashlib.sha1(pod.name.encode()).hexdigest(),
            "__meta_kubernetes_pod_controller_kind": "StatefulSet",
            "__meta_kubernetes_pod_controller_name": pod.lws,
        }
        for key, value in _pod_labels(pod).items():
            meta[f"__meta_kubernetes_pod_label_{sanitize_label_name(key)}"] = value
            meta[f"__meta_kubernetes_pod_labelpresent_{sanitize_label_name(key)}"] = "true"
        base = {
            "__meta_kubernetes_pod_container_name": pod.container,
            "__meta_kubernetes_pod_container_init": "false",
        }
        # one target per container port (the engine serves them all on its one local port)
        for name, number, protocol in pod.ports or (("", 0, ""),):
            labels = {**meta, **base}
            if number:
                labels["__meta_kubernetes_pod_container_port_name"] = name
                labels["__meta_kubernetes_pod_container_port_number"] = str(number)
                labels["__meta_kubernetes_pod_container_port_protocol"] = protocol or "TCP"
            groups.append({"targets": [f"127.0.0.1:{pod.port}"], "labels": labels})
    return groups


# --- scrape jobs from PodMonitors -------------------------------------------------------------
def _keep(labels: list[str], regex: str, action: str = "keep") -> dict[str, Any]:
    return {"action": action, "source_labels": labels, "regex": regex}


def _selector_relabelings(selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in sorted(selector.get("matchLabels") or {}):
        value = selector["matchLabels"][key]
        s = sanitize_label_name(key)
        both = [f"__meta_kubernetes_pod_label_{s}", f"__meta_kubernetes_pod_labelpresent_{s}"]
        out.append(_keep(both, f"({value});true"))
    for exp in selector.get("matchExpressions") or []:
        s = sanitize_label_name(str(exp.get("key")))
        both = [f"__meta_kubernetes_pod_label_{s}", f"__meta_kubernetes_pod_labelpresent_{s}"]
        values = "|".join(str(v) for v in exp.get("values") or [])
        op = exp.get("operator")
        if op == "In":
            out.append(_keep(both, f"({values});true"))
        elif op == "NotIn":
            out.append(_keep(both, f"({values});true", "drop"))
        elif op == "Exists":
            out.append(_keep([f"__meta_kubernetes_pod_labelpresent_{s}"], "true"))
        elif op == "DoesNotExist":
            out.append(_keep([f"__meta_kubernetes_pod_labelpresent_{s}"], "true", "drop"))
    return out


def _from_pod_label(sanitized: str, target: str) -> dict[str, Any]:
    return {
        "source_labels": [f"__meta_kubernetes_pod_label_{sanitized}"],
        "target_label": target,
        "regex": "(.+)",
        "replacement": "${1}",
    }


def _relabel(raw: Mapping[str, Any]) -> dict[str, Any]:
    # monitoringv1.RelabelConfig -> Prometheus relabel_config (the operator's
    # generateRelabelConfig: camelCase keys, action lower-cased).
    out: dict[str, Any] = {}
    if raw.get("sourceLabels"):
        out["source_labels"] = list(raw["sourceLabels"])
    for src, dst in (("separator", "separator"), ("targetLabel", "target_label"),
                     ("regex", "regex"), ("modulus", "modulus"),
                     ("replacement", "replacement")):  # fmt: skip
        if raw.get(src) not in (None, ""):
            out[dst] = raw[src]
    if raw.get("action"):
        out["action"] = str(raw["action"]).lower()
    return out


def _scaled(value: Any, scale: float, where: str) -> str:
    return format_duration(max(_MIN_INTERVAL_S, duration_s(value, where) * scale))


def pod_monitor_jobs(
    pod_monitor: Mapping[str, Any],
    *,
    sd_file: str | Path,
    time_scale: float = 1.0,
    interval_s: float | None = None,
) -> list[dict[str, Any]]:
    """Prometheus scrape jobs for one PodMonitor, as prometheus-operator generates them.

    Args:
        pod_monitor: the PodMonitor object.
        sd_file: the file-SD targets file standing in for ``kubernetes_sd_configs``.
        time_scale: multiplies ``interval``/``scrapeTimeout``.
        interval_s: the twin's override of every endpoint's interval.
    """
    meta = pod_monitor.get("metadata") or {}
    ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    spec = pod_monitor.get("spec") or {}
    where = f"PodMonitor {ns}/{name}"
    ns_selector = spec.get("namespaceSelector") or {}
    namespaces = [str(n) for n in ns_selector.get("matchNames") or []] or [ns]
    jobs = []
    for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
        job: dict[str, Any] = {"job_name": f"podMonitor/{ns}/{name}/{i}"}
        for key, dst in (("honorLabels", "honor_labels"), ("honorTimestamps", "honor_timestamps")):
            if ep.get(key) is not None:
                job[dst] = bool(ep[key])
        # kubernetes_sd_configs role pod, namespaces = the selector's (own namespace default)
        job["file_sd_configs"] = [{"files": [str(sd_file)]}]
        if interval_s is not None:
            job["scrape_interval"] = format_duration(max(_MIN_INTERVAL_S, interval_s))
        elif ep.get("interval"):
            job["scrape_interval"] = _scaled(ep["interval"], time_scale, f"{where} interval")
        if ep.get("scrapeTimeout"):
            timeout = _scaled(ep["scrapeTimeout"], time_scale, f"{where} scrapeTimeout")
            if interval_s is None or duration_s(timeout) <= interval_s:
                job["scrape_timeout"] = timeout
        if ep.get("path"):
            job["metrics_path"] = str(ep["path"])
        if ep.get("params"):
            job["params"] = ep["params"]
        if ep.get("scheme"):
            job["scheme"] = str(ep["scheme"])
        relabel: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        ]
        if not ns_selector.get("any"):  # the SD's namespaces list, as a relabeling here
            relabel.append(_keep(["__meta_kubernetes_namespace"], "|".join(namespaces)))
        if ep.get("filterRunning", True):
            relabel.append(_keep(["__meta_kubernetes_pod_phase"], "(Failed|Succeeded)", "drop"))
        relabel += _selector_relabelings(spec.get("selector") or {})
        if ep.get("port"):
            relabel.append(_keep(["__meta_kubernetes_pod_container_port_name"], str(ep["port"])))
        elif ep.get("portNumber"):
            relabel.append(
                _keep(["__meta_kubernetes_pod_container_port_number"], str(ep["portNumber"]))
            )
        elif ep.get("targetPort"):
            target = ep["targetPort"]
            label = "name" if isinstance(target, str) else "number"
            relabel.append(_keep([f"__meta_kubernetes_pod_container_port_{label}"], str(target)))
        relabel += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"],
             "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]  # fmt: skip
        for label in spec.get("podTargetLabels") or []:
            s = sanitize_label_name(str(label))
            relabel.append(_from_pod_label(s, s))
        relabel.append({"target_label": "job", "replacement": f"{ns}/{name}"})
        if spec.get("jobLabel"):
            s = sanitize_label_name(str(spec["jobLabel"]))
            relabel.append(_from_pod_label(s, "job"))
        target_port = ep.get("targetPort")
        port_name = ep.get("port") or (target_port if isinstance(target_port, str) else None)
        if port_name:
            relabel.append({"target_label": "endpoint", "replacement": str(port_name)})
        relabel += [_relabel(r) for r in ep.get("relabelings") or []]
        job["relabel_configs"] = relabel
        if ep.get("metricRelabelings"):
            job["metric_relabel_configs"] = [_relabel(r) for r in ep["metricRelabelings"]]
        jobs.append(job)
    return jobs


def render_config(
    jobs: Sequence[Mapping[str, Any]], rule_paths: Sequence[str], *, interval_s: float
) -> str:
    """``prometheus.yml``: global intervals, the rule files and the scrape jobs."""
    interval = format_duration(max(_MIN_INTERVAL_S, interval_s))
    timeout = format_duration(min(10.0, max(_MIN_INTERVAL_S, interval_s)))
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": timeout,
            "evaluation_interval": interval,
        },
        "rule_files": list(rule_paths),
        "scrape_configs": [dict(j) for j in jobs],
    }
    header = "# Written by the lab's twin controller from the rendered PodMonitors; do not edit.\n"
    return header + yaml.safe_dump(config, sort_keys=False, width=100)


def _scale_group(group: Mapping[str, Any], scale: float, where: str) -> dict[str, Any]:
    out = dict(group)
    if "interval" in out:
        out["interval"] = _scaled(out["interval"], scale, f"{where} interval")
    rules = []
    for rule in group.get("rules") or []:
        rule = dict(rule)
        for key in ("for", "keep_firing_for"):
            if key in rule:
                rule[key] = format_duration(duration_s(rule[key], f"{where} {key}") * scale)
        rules.append(rule)
    out["rules"] = rules
    return out


def rule_files(rules: Iterable[Mapping[str, Any]], time_scale: float = 1.0) -> dict[str, str]:
    """Rule file name -> text, one per ``PrometheusRule`` (``spec.groups``, durations scaled)."""
    files: dict[str, str] = {}
    for obj in rules:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace") or "default", meta.get("name")
        where = f"PrometheusRule {ns}/{name}"
        groups = [_scale_group(g, time_scale, where)
                  for g in (obj.get("spec") or {}).get("groups") or []]  # fmt: skip
        files[f"{ns}-{name}.yaml"] = yaml.safe_dump({"groups": groups}, sort_keys=False, width=100)
    return files


# --- the process ------------------------------------------------------------------------------
class PrometheusServer:
    """One Prometheus process for the twin: files under ``<state-dir>/prometheus/``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "prometheus"
        self.config_path = self.dir / "prometheus.yml"
        self.targets_path = self.dir / "targets.json"
        self.rules_dir = self.dir / "rules"
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.record: dict[str, Any] = {}
        self._targets_text = ""

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:<port>``), empty before :meth:`start`."""
        return f"http://127.0.0.1:{self.port}" if self.port else ""

    def _write_rules(self, files: Mapping[str, str]) -> list[str]:
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        for old in self.rules_dir.glob("*.yaml"):
            if old.name not in files:
                old.unlink()
        for name, text in files.items():
            path = self.rules_dir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        return [str(self.rules_dir / n) for n in sorted(files)]

    async def _check(self, path: Path) -> None:
        # Like `haproxy -c` before a reload: a bad generated config is an error here, with
        # promtool's reason, not a Prometheus that silently keeps the old one.
        tool = promtool_binary()
        if tool is None:
            return
        check = await asyncio.create_subprocess_exec(
            tool, "check", "config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await check.communicate()
        if check.returncode != 0:
            raise TwinError(
                f"{path}: promtool rejected the generated config: {out.decode()[-400:]}"
            )

    def write_targets(self, groups: list[dict[str, Any]]) -> bool:
        """Replace the file-SD targets atomically when they changed; returns whether they did."""
        text = json.dumps(groups, indent=1, sort_keys=True)
        if text == self._targets_text:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".targets.{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.replace(self.targets_path)
        self._targets_text = text
        return True

    async def _write_config(
        self, jobs: Sequence[Mapping[str, Any]], rules: Mapping[str, str], interval_s: float
    ) -> bool:
        """Write the rule files and ``prometheus.yml``; whether anything changed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        before = {p.name: p.read_text() for p in self.rules_dir.glob("*.yaml")}
        paths = self._write_rules(rules)
        text = render_config(jobs, paths, interval_s=interval_s)
        changed = before != dict(rules)
        if not self.config_path.exists() or self.config_path.read_text() != text:
            tmp = self.dir / "prometheus.yml.new"
            tmp.write_text(text)
            await self._check(tmp)
            tmp.replace(self.config_path)
            changed = True
        return changed

    async def start(
        self,
        jobs: Sequence[Mapping[str, Any]],
        rules: Mapping[str, str],
        *,
        interval_s: float,
        timeout_s: float = 30.0,
    ) -> None:
        """Start on a free 127.0.0.1 port with a fresh data dir; wait for ``/-/ready``."""
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        if not self.targets_path.exists():
            self.write_targets([])
        await self._write_config(jobs, rules, interval_s)
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_ports(1)[0]
            log = (self.state_dir / "logs" / "prometheus.log").open("ab")
            self.proc = await asyncio.create_subprocess_exec(
                prometheus_binary(),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            log.close()
            self.record = record_of(self.proc.pid, "prometheus", port=self.port)
            if await self._wait_ready(timeout_s):
                return
            if attempt == 2 or self.proc.returncode is None:
                break
        await self.stop()
        raise TwinError(
            f"Prometheus did not become ready; see {self.state_dir / 'logs' / 'prometheus.log'}"
        )

    async def _wait_ready(self, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    return False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.url}/-/ready", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            return True
                await asyncio.sleep(0.05)
        return False

    async def _last_reload_s(self, session: aiohttp.ClientSession) -> float:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(
                f"{self.url}/metrics", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                text = await resp.text()
            value = sample_value(text, "prometheus_config_last_reload_success_timestamp_seconds")
            return value or 0.0
        return 0.0

    async def apply(
        self,
        jobs: Sequence[Mapping[str, Any]],
        rules: Mapping[str, str],
        *,
        interval_s: float,
        timeout_s: float = 15.0,
    ) -> bool:
        """Write a new config and rules; reload (SIGHUP) and wait for it when they changed."""
        changed = await self._write_config(jobs, rules, interval_s)
        if not changed or self.proc is None or self.proc.returncode is not None:
            return changed
        async with aiohttp.ClientSession() as session:
            last = await self._last_reload_s(session)
            self.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if await self._last_reload_s(session) > last:
                    return True
        raise TwinError(
            f"Prometheus did not reload {self.config_path} within {timeout_s:.0f} s; see "
            f"{self.state_dir / 'logs' / 'prometheus.log'}"
        )

    async def stop(self) -> None:
        """SIGTERM (Prometheus flushes its head block), SIGKILL after 10 s."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
