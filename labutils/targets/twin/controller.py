"""The twin's controller process: LWS groups, HAProxy membership, health, HPA loop, faults.

Runs as ``python -m labutils.targets.twin.controller --state-dir DIR`` (started by
``labctl twin up``), owns every engine process, HAProxy (master-worker mode) and Prometheus
(:mod:`labutils.targets.twin.prometheus`), and records them in ``state.json``. A small HTTP
control API on 127.0.0.1 takes ``scale``/``fail``/``restore``/``shutdown``. LWS semantics
reproduced: ``replicas`` groups ``<lws>-<g>``; a group is ready when its engine passed model
load and answers ``/health``; a group whose engine dies is recreated
(``RecreateGroupOnPodRestart``) unless a ``fail --mode kill`` holds it down; scale-down removes
the highest indexes after draining them in HAProxy (no dropped requests). The HPA loop reads
its ``Pods`` metrics the way the cluster's HPA does: the lab's prometheus-adapter rule rendered
into PromQL for the LWS's leader pods and evaluated by Prometheus
(:mod:`labutils.metrics.adapter`); a failure is the HPA's ``FailedGetPodsMetric``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from labutils.errors import LabError, MetricsError, TwinError
from labutils.kube.hpa import Autoscaler, PodSample
from labutils.metrics.adapter import AdapterError, PodsMetric, pods_metric_async
from labutils.targets.twin import haproxy as hp
from labutils.targets.twin import prometheus as prom
from labutils.targets.twin.options import TwinOptions
from labutils.targets.twin.ports import free_ports
from labutils.targets.twin.spec import TwinSpec, ZoneSpec, load_twin_spec
from labutils.targets.twin.state import append_event, record_of, write_state

__all__ = ["main"]

_READY_POLL_S = 0.2
_QUEUE_POLL_S = 0.25


@dataclass
class _Group:
    zone: str
    lws: str
    index: int
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    phase: str = "Pending"  # Pending | Running | Failed | Terminating
    ready: bool = False
    restarts: int = 0
    held: bool = False  # fail --mode kill: not recreated until restore
    fault: str = "ok"
    last_error: str = ""
    retry_at_s: float = 0.0  # CrashLoopBackOff: no restart before this monotonic time
    probe_at_s: float = 0.0  # next readiness probe (frequent while starting, 1 s once ready)
    started_s: float = 0.0
    load_s: float = 0.0  # simulated model-load time of its current engine (TwinOptions)
    initial: bool = False  # created by the first rollout (not by a later scale-up)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.lws}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else ""


class _Controller:
    def __init__(self, spec: TwinSpec, state_dir: Path, options: TwinOptions) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self.options = options
        self.groups: dict[str, _Group] = {}
        self.replicas: dict[str, int] = {z.lws: z.replicas for z in spec.zones}
        self.slots: dict[str, int] = {}
        self.autoscalers = {
            h.target_name: Autoscaler(
                h, downscale_stabilization_s=options.downscale_stabilization_s
            )
            for h in spec.hpas
        }
        self.haproxy: asyncio.subprocess.Process | None = None
        self.haproxy_record: dict[str, Any] = {}
        self.prometheus = prom.PrometheusServer(state_dir)
        self.layout: hp.HaproxyLayout | None = None
        self.control_port = 0
        self.stopping = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.config_generation = 0
        self.weights: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.phase = "starting"
        self.rolled_out = False  # the first reconcile created its groups
        self.background: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)  # keep a reference until done (asyncio holds weak ones)
        task.add_done_callback(self.background.discard)

    # --- engines -------------------------------------------------------------------------
    def _engine_argv(self, zone: ZoneSpec, group: _Group) -> list[str]:
        eng = zone.engine
        # In the first rollout, added by a scale-up, or recreated after its engine died.
        kind = "recreated" if group.restarts else "initial" if group.initial else "added"
        group.load_s = self.options.group_load_s(zone, kind)
        argv = [
            *self.options.engine_command, "serve", eng.model, "--host", "127.0.0.1",
            "--port", "0", "--gpu", zone.gpu,
            "--tensor-parallel-size", str(eng.tensor_parallel_size),
            "--pipeline-parallel-size", str(eng.pipeline_parallel_size),
            "--max-num-seqs", str(eng.max_num_seqs), "--served-model-name", eng.name,
            "--seed", str(self.options.seed * 1000 + hash(group.name) % 1000),
            "--model-load-s", f"{group.load_s:.3f}",
            "--lab-zone", zone.zone, "--lab-group", group.name,
        ]  # fmt: skip
        if eng.max_model_len:
            argv += ["--max-model-len", str(eng.max_model_len)]
        if self.options.engine_calibration:
            argv += ["--calibration", self.options.engine_calibration]
        return argv

    async def _start_group(self, group: _Group) -> None:
        zone = self.spec.zone(group.zone)
        log = (self.state_dir / "logs" / f"{group.name}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            *self._engine_argv(zone, group), stdout=asyncio.subprocess.PIPE, stderr=log, env=env
        )
        log.close()
        group.proc, group.phase, group.ready = proc, "Pending", False
        group.started_s = time.time()
        group.record = record_of(proc.pid, "engine", group=group.name, zone=group.zone)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            port = int(json.loads(line)["port"])
        except (TimeoutError, ValueError, KeyError, json.JSONDecodeError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            log_path = self.state_dir / "logs" / f"{group.name}.log"
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            group.last_error = f"engine exited before listening: {tail[0][:300]} (see {log_path})"
            group.phase = "Failed"
            self._event("engine-failed", group.name, group.last_error)
            return
        group.port = port
        group.record["port"] = port
        self._spawn(self._drain(proc))
        group.phase = "Running"
        loading = f"model load {group.load_s:.1f} s"
        self._event("group-started", group.name, f"engine pid {proc.pid} on port {port}, {loading}")
        self._write()

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(Exception):
            while await proc.stdout.readline():
                pass

    async def _stop_process(self, group: _Group, sig: int = signal.SIGTERM) -> None:
        proc = group.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _health_ok(self, group: _Group) -> bool:
        if not group.port or self.session is None:
            return False
        try:
            async with self.session.get(
                f"{group.url}/health", timeout=aiohttp.ClientTimeout(total=2)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    # --- haproxy -------------------------------------------------------------------------
    def _slot_count(self, zone: ZoneSpec) -> int:
        hpa = self.spec.hpa_for(zone.lws)
        wanted = max(self.replicas[zone.lws], hpa.max_replicas if hpa else 0)
        return wanted + self.options.spare_slots

    def _slots(self) -> list[hp.Slot]:
        out = []
        for zone in self.spec.zones:
            self.slots[zone.lws] = max(self.slots.get(zone.lws, 0), self._slot_count(zone))
            for index in range(self.slots[zone.lws]):
                group = self.groups.get(f"{zone.lws}-{index}")
                port = group.port if group and group.ready else None
                out.append(hp.Slot(zone.zone, f"{zone.lws}-{index}", port))
        return out

    async def _write_haproxy_config(self) -> Path:
        assert self.layout is not None
        self.config_generation += 1
        cfg = hp.render_haproxy_config(self.spec, self.layout, self._slots(),
                                       strategy=self.options.strategy,
                                       time_scale=self.options.time_scale,
                                       generation=self.config_generation)  # fmt: skip
        path = self.state_dir / "haproxy.cfg"
        path.write_text(cfg)
        check = await asyncio.create_subprocess_exec(
            hp.haproxy_binary(), "-c", "-q", "-f", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await check.communicate()
        if check.returncode != 0:
            raise TwinError(f"{path}: HAProxy rejected the generated config: {out.decode()[-300:]}")
        return path

    async def _start_haproxy(self) -> None:
        path = await self._write_haproxy_config()
        log = (self.state_dir / "logs" / "haproxy.log").open("ab")
        self.haproxy = await asyncio.create_subprocess_exec(
            hp.haproxy_binary(), "-W", "-S", str(self.state_dir / "master.sock"), "-f", str(path),
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        self.haproxy_record = record_of(self.haproxy.pid, "haproxy")
        for _ in range(100):
            if self.layout and self.layout.socket_path.exists():
                with contextlib.suppress(TwinError):
                    await hp.runtime_command(self.layout.socket_path, "show info")
                    return
            if self.haproxy.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise TwinError(f"HAProxy did not start; see {self.state_dir / 'logs' / 'haproxy.log'}")

    async def _reload_haproxy(self) -> None:
        await self._write_haproxy_config()
        assert self.haproxy is not None
        self.haproxy.send_signal(signal.SIGUSR2)  # master-worker: hitless reload
        await self._wait_config_generation()
        self.weights.clear()

    async def _wait_config_generation(self, timeout_s: float = 15.0) -> None:
        # The reload is asynchronous: until the new worker has taken over the listeners, new
        # connections still meet the old config (e.g. the old route weights). Wait for it.
        assert self.layout is not None
        url = f"http://127.0.0.1:{self.layout.stats_port}/lab/config-generation"
        want = str(self.config_generation)
        deadline = time.monotonic() + timeout_s
        seen = "nothing"
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with (
                    aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(force_close=True)
                    ) as session,
                    session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp,
                ):
                    seen = (await resp.text()).strip()
                    if seen == want:
                        return
            await asyncio.sleep(0.05)
        raise TwinError(
            f"HAProxy reload did not take over within {timeout_s:.0f} s: "
            f"{url} says config {seen}, want {want}; see logs/haproxy.log"
        )

    async def _runtime(self, command: str) -> str:
        assert self.layout is not None
        return await hp.runtime_command(self.layout.socket_path, command)

    def _backends(self, group: _Group) -> list[str]:
        return hp.server_backends(self.spec, group.zone, self.options.strategy)

    async def _enable(self, group: _Group) -> None:
        index_limit = self.slots.get(group.lws, 0)
        if group.index >= index_limit:
            await self._reload_haproxy()  # a new slot (scaled past the planned maximum)
            return
        for be in self._backends(group):
            await self._runtime(f"set server {be}/{group.name} addr 127.0.0.1 port {group.port}")
            await self._runtime(f"set server {be}/{group.name} state ready")

    async def _drain_and_disable(self, group: _Group, timeout_s: float = 60.0) -> None:
        for be in self._backends(group):
            with contextlib.suppress(TwinError):
                await self._runtime(f"set server {be}/{group.name} state drain")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and await self._sessions(group) > 0:
            await asyncio.sleep(0.1)
        for be in self._backends(group):
            with contextlib.suppress(TwinError):
                await self._runtime(f"set server {be}/{group.name} state maint")

    async def _sessions(self, group: _Group) -> int:
        backends = self._backends(group)
        rows = hp.server_stats(await self._runtime("show stat"))
        return sum(r.sessions for r in rows if r.server == group.name and r.backend in backends)

    # --- reconcile -----------------------------------------------------------------------
    async def _reconcile(self) -> None:
        async with self.lock:
            for zone in self.spec.zones:
                want = self.replicas[zone.lws]
                existing = sorted(
                    (g for g in self.groups.values() if g.lws == zone.lws), key=lambda g: g.index
                )
                for group in existing:
                    if group.index >= want:
                        self._spawn(self._remove_group(group))
                        self.groups.pop(group.name, None)
                for index in range(want):
                    name = f"{zone.lws}-{index}"
                    if name not in self.groups:
                        group = _Group(zone.zone, zone.lws, index, initial=not self.rolled_out)
                        self.groups[name] = group
                        self._spawn(self._start_group(group))

    async def _remove_group(self, group: _Group) -> None:
        group.phase = "Terminating"
        if group.ready:
            await self._drain_and_disable(group)
        await self._stop_process(group)
        self._event("group-deleted", group.name, "scaled down (drained first)")
        self._write()

    async def _supervise(self) -> None:
        while not self.stopping.is_set():
            if self.haproxy is not None and self.haproxy.returncode is not None:
                self._event("haproxy-restarted", "haproxy", f"exited ({self.haproxy.returncode})")
                await self._start_haproxy()
                self._write()
            proc = self.prometheus.proc
            if proc is not None and proc.returncode is not None:
                self._event("prometheus-restarted", "prometheus", f"exited ({proc.returncode})")
                await self._start_prometheus()
                self._write()
            for group in list(self.groups.values()):
                proc = group.proc
                if group.phase == "Running" and proc is not None and proc.returncode is not None:
                    group.phase, group.ready = "Failed", False
                    self._event("group-failed", group.name, f"engine exited ({proc.returncode})")
                if (
                    group.phase == "Failed"
                    and not group.held
                    and self.groups.get(group.name)
                    and time.monotonic() >= group.retry_at_s
                ):
                    group.restarts += 1
                    # like kubelet's CrashLoopBackOff: 0.5 s doubling, capped at 30 s
                    backoff_s = min(30.0, 0.5 * 2 ** min(group.restarts, 8))
                    group.retry_at_s = time.monotonic() + backoff_s
                    self._event("group-recreated", group.name,
                                "RecreateGroupOnPodRestart: whole group recreated")  # fmt: skip
                    group.port = None
                    self._spawn(self._start_group(group))
                    group.phase = "Pending"
                if group.phase == "Running" and time.monotonic() >= group.probe_at_s:
                    # readiness probe: fast while loading, like periodSeconds 1 once ready
                    group.probe_at_s = time.monotonic() + (1.0 if group.ready else 0.0)
                    ok = await self._health_ok(group)
                    if ok and not group.ready:
                        group.ready, group.last_error = True, ""
                        await self._enable(group)
                        self._event("group-ready", group.name, "model loaded, /health 200")
                    elif not ok and group.ready:
                        group.ready = False
                        self._event("group-unready", group.name, "/health failing")
            self._write()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), _READY_POLL_S)

    # --- Prometheus --------------------------------------------------------------------
    def _scrape_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        for monitor in self.spec.pod_monitors:
            jobs += prom.pod_monitor_jobs(
                monitor,
                sd_file=self.prometheus.targets_path,
                time_scale=self.options.time_scale,
                interval_s=self.options.scrape_interval_s,
            )
        return jobs

    def _global_interval_s(self) -> float:
        # scrape default and rule evaluation interval (the operator's 30 s default, scaled)
        if self.options.scrape_interval_s is not None:
            return self.options.scrape_interval_s
        return prom.DEFAULT_INTERVAL_S * self.options.time_scale

    def _rule_files(self) -> dict[str, str]:
        return prom.rule_files(self.spec.prometheus_rules, self.options.time_scale)

    def _leader_pods(self) -> list[prom.LeaderPod]:
        pods = []
        for group in self.groups.values():
            zone = self.spec.zone(group.zone)
            phase = {"Failed": "Failed", "Pending": "Pending"}.get(group.phase, "Running")
            pods.append(prom.LeaderPod(
                namespace=self.spec.namespace, name=group.name, lws=group.lws,
                group_index=group.index, phase=phase, ready=group.ready,
                port=group.port if group.phase != "Pending" else None,
                container=zone.container, ports=zone.ports, labels=zone.pod_labels,
            ))  # fmt: skip
        return pods

    async def _start_prometheus(self) -> None:
        self.prometheus.write_targets(prom.target_groups(self._leader_pods()))
        await self.prometheus.start(
            self._scrape_jobs(), self._rule_files(), interval_s=self._global_interval_s()
        )

    # --- HPA -----------------------------------------------------------------------------
    async def _pods_metric(self, metric: str, pods: list[str]) -> PodsMetric | str:
        """The metric for ``pods`` through prometheus-adapter's rule, or the HPA's error."""
        try:
            return await pods_metric_async(
                self.prometheus.url, self.spec.adapter_rules, metric, self.spec.namespace, pods,
                session=self.session,
            )  # fmt: skip
        except AdapterError as exc:
            return str(exc)
        except MetricsError as exc:  # Prometheus unreachable: the adapter's internal error
            return (
                f"unable to get metric {metric}: unable to fetch metrics from custom metrics "
                f"API: Internal error occurred: unable to fetch metrics (adapter log: {exc})"
            )

    async def _hpa_once(self) -> None:
        for lws, scaler in self.autoscalers.items():
            groups = [g for g in self.groups.values() if g.lws == lws]
            names = [g.name for g in sorted(groups, key=lambda g: g.index)]
            samples: dict[str, list[PodSample]] = {m.name: [] for m in scaler.spec.metrics}
            errors: dict[str, str] = {}
            fetched: dict[str, PodsMetric] = {}
            for metric in scaler.spec.metrics:
                if metric.kind != "Pods":
                    errors[metric.name] = (
                        f"the twin serves Pods metrics only (prometheus-adapter custom metrics); "
                        f"{metric.name} is a {metric.kind} metric"
                    )
                    continue
                answer = await self._pods_metric(metric.name, names)
                if isinstance(answer, str):
                    errors[metric.name] = answer
                else:
                    fetched[metric.name] = answer
            for group in groups:
                phase = "Running" if group.phase == "Running" else (
                    "Failed" if group.phase == "Failed" else "Pending")  # fmt: skip
                for name, result in fetched.items():
                    samples[name].append(
                        PodSample(group.name, result.values.get(group.name), phase=phase,  # type: ignore[arg-type]
                                  ready=group.ready, deleting=group.phase == "Terminating")
                    )  # fmt: skip
            current = self.replicas[lws]
            decision = scaler.sync(time.monotonic(), current, samples, errors=errors)
            row = decision.to_row()
            row["time_s"] = time.time()
            for name, result in fetched.items():
                # the HPA's input exactly as the metrics API returned it, with its query
                row[f"{name}:query"] = result.query
                row[f"{name}:eval_time_s"] = result.time_s
                row[f"{name}:pods"] = dict(result.values)
            for name, error in errors.items():
                row[f"{name}:error"] = error
            active = len(errors) < len(scaler.spec.metrics)
            row["scaling_active"] = active
            row["scaling_active_reason"] = "ValidMetricFound" if active else "FailedGetPodsMetric"
            append_event(self.state_dir, {"kind": "hpa", "object": decision.hpa, **row,
                                          "message": decision.reason})  # fmt: skip
            for error in errors.values():
                # the HPA controller's Warning event (pkg/controller/podautoscaler/horizontal.go)
                append_event(self.state_dir, {
                    "time_s": time.time(), "kind": "hpa-warning", "reason": "FailedGetPodsMetric",
                    "object": decision.hpa, "message": error,
                })  # fmt: skip
            if decision.rescale:
                self.replicas[lws] = decision.desired_replicas
                self._event("scaled", lws, f"HPA {current} -> {decision.desired_replicas}")
                await self._reconcile()

    async def _hpa_loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.options.sync_period_s)
            if self.stopping.is_set():
                return
            try:
                await self._hpa_once()
            except LabError as exc:
                self._event("hpa-error", "hpa", str(exc))

    # --- queue-aware weights (the endpoint picker's preference, fed to HAProxy) -----------
    async def _queue_loop(self) -> None:
        while not self.stopping.is_set() and self.options.strategy == "queue-aware":
            for group in list(self.groups.values()):
                if not group.ready or self.session is None:
                    continue
                try:
                    async with self.session.get(
                        f"{group.url}/lab/state", timeout=aiohttp.ClientTimeout(total=1)
                    ) as r:
                        body = await r.json()
                    waiting = float(body.get("num_requests_waiting", body.get("waiting", 0)))
                    kv = float(body.get("kv_cache_usage_perc", 0))
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    continue
                weight = max(1, int(100 * (1.0 - 0.9 * min(kv, 1.0)) / (1.0 + waiting)))
                if self.weights.get(group.name) != weight:
                    self.weights[group.name] = weight
                    with contextlib.suppress(TwinError):
                        await self._runtime(f"set weight pool/{group.name} {weight}")
            await asyncio.sleep(_QUEUE_POLL_S)

    # --- faults --------------------------------------------------------------------------
    def _targets(self, zone: str | None, group: str | None) -> list[_Group]:
        if group:
            if group not in self.groups:
                raise TwinError(f"unknown group {group!r}; choose one of: "
                                f"{', '.join(sorted(self.groups))}")  # fmt: skip
            return [self.groups[group]]
        if zone:
            self.spec.zone(zone)
            return [g for g in self.groups.values() if g.zone == zone]
        raise TwinError("name a --zone or a --group")

    async def _fault(self, group: _Group, mode: str) -> None:
        if self.session is None or not group.port:
            return
        body = {"mode": mode, "slow_factor": 4}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.session.post(f"{group.url}/lab/fault", json=body) as r:
                await r.read()

    async def fail(self, zone: str | None, group: str | None, mode: str) -> list[str]:
        targets = self._targets(zone, group)
        for g in targets:
            g.fault = mode
            if mode == "kill":
                g.held = True
                await self._stop_process(g, signal.SIGKILL)
            else:
                await self._fault(g, mode)
            self._event("fault", g.name, f"fail --mode {mode}")
        return [g.name for g in targets]

    async def restore(self, zone: str | None, group: str | None) -> list[str]:
        targets = self._targets(zone, group)
        for g in targets:
            if g.fault != "kill":
                await self._fault(g, "ok")
            g.fault, g.held = "ok", False
            self._event("restore", g.name, "restored")
        return [g.name for g in targets]

    # --- apply (kubectl apply of changed manifests) ---------------------------------------
    async def apply(self, manifests: str, digest: str) -> bool:
        """Apply changed manifests live; ``False`` when engines must be recreated (restart)."""
        new = load_twin_spec(manifests)
        old = self.spec
        same_shape = [(z.zone, z.lws, z.engine, z.gpu, z.size) for z in new.zones] == [
            (z.zone, z.lws, z.engine, z.gpu, z.size) for z in old.zones
        ]
        if not same_shape:
            return False
        async with self.lock:
            self.spec = new
            self.options.manifests, self.options.manifests_digest = manifests, digest
            for zone in new.zones:
                # kubectl apply sets spec.replicas, overriding the HPA's count (as on a cluster)
                if zone.replicas != old.zone(zone.zone).replicas:
                    self.replicas[zone.lws] = zone.replicas
            kept = self.autoscalers
            self.autoscalers = {}
            for hpa in new.hpas:
                scaler = Autoscaler(
                    hpa, downscale_stabilization_s=self.options.downscale_stabilization_s
                )
                if hpa.target_name in kept:  # keep the controller's memory across spec edits
                    prior = kept[hpa.target_name]
                    scaler.recommendations = prior.recommendations
                    scaler.scale_up_events = prior.scale_up_events
                    scaler.scale_down_events = prior.scale_down_events
                    scaler.seeded = prior.seeded
                self.autoscalers[hpa.target_name] = scaler
            await self._reload_haproxy()
            await self.prometheus.apply(
                self._scrape_jobs(), self._rule_files(), interval_s=self._global_interval_s()
            )
        await self._reconcile()
        self._event("applied", "twin", f"manifests {manifests} ({digest[:12]})")
        self._write()
        return True

    # --- state ---------------------------------------------------------------------------
    def _event(self, kind: str, obj: str, message: str) -> None:
        append_event(self.state_dir, {"time_s": time.time(), "kind": kind, "object": obj,
                                      "message": message})  # fmt: skip

    def _lws_status(self) -> list[dict[str, Any]]:
        rows = []
        for zone in self.spec.zones:
            groups = [g for g in self.groups.values() if g.lws == zone.lws]
            ready = sum(1 for g in groups if g.ready and g.phase == "Running")
            want = self.replicas[zone.lws]
            rows.append({
                "zone": zone.zone, "lws": zone.lws, "replicas": want,
                "ready_replicas": ready, "updated_replicas": len(groups), "size": zone.size,
                "conditions": "Available" if ready >= want else "Progressing",
                "weight": zone.weight,
            })  # fmt: skip
        return rows

    def _write(self) -> None:
        assert self.layout is not None
        records = [self.haproxy_record] + [g.record for g in self.groups.values() if g.record]
        if self.prometheus.record:
            records.append(self.prometheus.record)
            self.prometheus.write_targets(prom.target_groups(self._leader_pods()))
        state = {
            "phase": self.phase,
            "controller": record_of(os.getpid(), "controller", port=self.control_port),
            "processes": records,
            "control_url": f"http://127.0.0.1:{self.control_port}",
            "gateway_url": f"http://127.0.0.1:{self.layout.gateway_port}",
            "stats_url": f"http://127.0.0.1:{self.layout.stats_port}/metrics",
            "prometheus_url": self.prometheus.url,
            "zone_urls": {z: f"http://127.0.0.1:{p}" for z, p in self.layout.zone_ports.items()},
            "model": self.spec.zones[0].engine.name if self.spec.zones else "",
            "options": asdict(self.options),
            "lws": self._lws_status(),
            "groups": [
                {
                    "zone": g.zone,
                    "lws": g.lws,
                    "group": g.name,
                    "url": g.url,
                    "phase": g.phase,
                    "ready": g.ready,
                    "restarts": g.restarts,
                    "fault": g.fault,
                    "pid": g.proc.pid if g.proc else None,
                    "size": self.spec.zone(g.zone).size,
                }
                for g in sorted(self.groups.values(), key=lambda g: (g.lws, g.index))
            ],
        }
        write_state(self.state_dir, state)

    # --- control API ---------------------------------------------------------------------
    async def _serve_control(self) -> web.AppRunner:
        async def scale(request: web.Request) -> web.Response:
            body = await request.json()
            lws, replicas = str(body.get("lws")), int(body.get("replicas", -1))
            if lws not in self.replicas:
                return web.json_response({"error": f"unknown LWS {lws!r}; choose one of: "
                                          f"{', '.join(self.replicas)}"}, status=404)  # fmt: skip
            if replicas < 0:
                return web.json_response({"error": "replicas must be >= 0"}, status=400)
            self.replicas[lws] = replicas
            self._event("scaled", lws, f"scale to {replicas}")
            await self._reconcile()
            return web.json_response({"lws": lws, "replicas": replicas})

        async def fault(request: web.Request) -> web.Response:
            body = await request.json()
            try:
                if request.path.endswith("restore"):
                    names = await self.restore(body.get("zone"), body.get("group"))
                else:
                    names = await self.fail(body.get("zone"), body.get("group"),
                                            str(body.get("mode", "kill")))  # fmt: skip
            except LabError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            self._write()
            return web.json_response({"groups": names})

        async def apply(request: web.Request) -> web.Response:
            body = await request.json()
            try:
                applied = await self.apply(str(body["manifests"]), str(body.get("digest", "")))
            except LabError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response({"applied": applied})

        async def hpa_now(_: web.Request) -> web.Response:
            await self._hpa_once()
            return web.json_response({"ok": True})

        async def shutdown(_: web.Request) -> web.Response:
            self.stopping.set()
            return web.json_response({"stopping": True})

        app = web.Application()
        app.router.add_post("/scale", scale)
        app.router.add_post("/fail", fault)
        app.router.add_post("/restore", fault)
        app.router.add_post("/hpa-sync", hpa_now)
        app.router.add_post("/apply", apply)
        app.router.add_post("/shutdown", shutdown)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.control_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner

    async def run(self) -> None:
        ports = free_ports(2 + len(self.spec.zones))
        self.layout = hp.HaproxyLayout(
            gateway_port=ports[0],
            stats_port=ports[1],
            zone_ports={z.zone: p for z, p in zip(self.spec.zones, ports[2:], strict=True)},
            socket_path=self.state_dir / "haproxy.sock",
            map_path=self.state_dir / "zones.map",
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.session = aiohttp.ClientSession()
        runner = await self._serve_control()
        try:
            await self._start_haproxy()
            await self._start_prometheus()
            await self._reconcile()
            self.rolled_out = True
            self._write()
            loops = (self._supervise(), self._hpa_loop(), self._queue_loop(), self._watch_ready())
            tasks = [asyncio.create_task(c) for c in loops]
            await self.stopping.wait()
            for task in tasks:
                task.cancel()
        finally:
            self.phase = "stopping"
            await asyncio.gather(*(self._stop_process(g) for g in self.groups.values()),
                                 return_exceptions=True)  # fmt: skip
            await self.prometheus.stop()
            if self.haproxy and self.haproxy.returncode is None:
                self.haproxy.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.haproxy.wait(), 5)
                if self.haproxy.returncode is None:
                    self.haproxy.kill()
                    await self.haproxy.wait()
            await self.session.close()
            await runner.cleanup()
            self.phase = "stopped"
            self._write()
            self._event("twin-stopped", "twin", "all processes stopped")

    async def _watch_ready(self) -> None:
        while not self.stopping.is_set():
            if all(r["ready_replicas"] >= r["replicas"] for r in self._lws_status()):
                if self.phase != "ready":
                    self.phase = "ready"
                    self._event("twin-ready", "twin", "every LWS Available")
                    self._write()
            elif self.phase == "ready":
                self.phase = "degraded"
                self._write()
            await asyncio.sleep(_READY_POLL_S)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the controller process."""
    parser = argparse.ArgumentParser(prog="python -m labutils.targets.twin.controller")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--options", required=True, help="TwinOptions as JSON")
    args = parser.parse_args(argv)
    options = TwinOptions(**json.loads(args.options))
    state_dir = Path(args.state_dir)
    try:
        spec = load_twin_spec(options.manifests)
        controller = _Controller(spec, state_dir, options)
        asyncio.run(controller.run())
    except LabError as exc:
        append_event(state_dir, {"time_s": time.time(), "kind": "twin-error", "object": "twin",
                                 "message": str(exc)})  # fmt: skip
        print(f"twin controller: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
