"""Failure drills: inject a fault under open-loop load and measure what the clients saw.

Each drill runs a bounded open-loop Poisson load through the gateway, injects one fault at a
known offset, and returns a :class:`DrillResult`: every scheduled request with its outcome and
the phase it was sent in, when the load balancer took the failed part out of rotation
(*detected*, read from HAProxy's runtime API every 50 ms, not guessed) and when it was back
(*recovered*), next to what the manifests' health-check settings predict: a dead target is
marked DOWN within ``interval x unhealthy-threshold`` plus up to one interval (the check in
flight when it died), scaled by the twin's ``time_scale``.

Drills (:data:`DRILLS`):

- ``zone-kill``: every group of a zone killed and held down (a lost zone), restored later;
- ``group-crash``: one group's leader killed; the group is recreated as LWS does
  (``RecreateGroupOnPodRestart``);
- ``group-unhealthy``: ``/health`` fails but the server still answers requests;
- ``group-slow``: generation 4x slower; health checks stay green (they cannot see it);
- ``lb-restart``: the load balancer (HAProxy) killed; the twin's controller restarts it.

The zone and group faults use the twin's ``fail``/``restore``; on other backends only
``zone-kill`` runs (the zone's LWS scaled to 0 and back) and detection is not observable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labutils._aio import run_sync
from labutils._progress import progress_bar
from labutils.errors import ConfigError, TwinError, ValidationError
from labutils.loadtest import LoadTestResult, open_loop, run_load_async
from labutils.protocol import Backend
from labutils.targets import fault_injector

__all__ = [
    "DRILLS",
    "DrillResult",
    "HealthSettings",
    "ServerState",
    "check_drill",
    "check_no_failover",
    "drills_frame",
    "engines_label",
    "health_frame",
    "health_settings",
    "run_drill",
    "running_manifests",
    "zone_outage",
]

DRILLS = ("zone-kill", "group-crash", "group-unhealthy", "group-slow", "lb-restart")
_POLL_S = 0.05
_FAILED = "failed"


@dataclass(frozen=True)
class HealthSettings:
    """A zone's load-balancer health check (Service annotations) as the drill sees it."""

    zone: str
    interval_s: float  # as written in the manifest
    unhealthy_threshold: int
    healthy_threshold: int
    time_scale: float = 1.0  # the twin's multiplier on intervals (1 on a cluster)

    @property
    def effective_interval_s(self) -> float:
        """The check interval actually in force (``interval_s x time_scale``)."""
        return self.interval_s * self.time_scale

    @property
    def predicted_detect_s(self) -> float:
        """Upper bound on fault -> DOWN: interval x unhealthy threshold + one interval."""
        return self.effective_interval_s * (self.unhealthy_threshold + 1)

    @property
    def predicted_rise_s(self) -> float:
        """Healthy again -> UP: interval x healthy threshold (+ one interval at most)."""
        return self.effective_interval_s * (self.healthy_threshold + 1)


@dataclass(frozen=True)
class ServerState:
    """One observed change of a load-balancer server's status."""

    time_s: float  # seconds from the load's start
    backend: str
    server: str
    status: str


@dataclass
class DrillResult:
    """What one drill measured; times are seconds from the load's start (NaN: not observed)."""

    drill: str
    target: str  # zone or group name ("haproxy" for lb-restart)
    groups: tuple[str, ...]  # the groups the fault hit
    strategy: str
    load: LoadTestResult
    health: HealthSettings | None
    fault_s: float
    detected_s: float = math.nan
    restore_s: float = math.nan
    recovered_s: float = math.nan
    detection_source: str = ""
    target_share: float = math.nan  # the target zone's share of the route weights
    states: list[ServerState] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def detect_s(self) -> float:
        """Fault -> the failed part out of rotation."""
        return self.detected_s - self.fault_s

    @property
    def recover_s(self) -> float:
        """Fault lifted (restore, or the fault itself for crash/restart) -> back in rotation."""
        start = self.restore_s if not math.isnan(self.restore_s) else self.fault_s
        return self.recovered_s - start

    @property
    def marks(self) -> dict[str, float]:
        """Named instants for plots (only the observed ones)."""
        named = {
            "fault": self.fault_s,
            "detected": self.detected_s,
            "restore": self.restore_s,
            "recovered": self.recovered_s,
        }
        return {k: v for k, v in named.items() if not math.isnan(v)}

    def to_frame(self) -> pd.DataFrame:
        """One row per scheduled request with ``phase`` and ``on_target`` (served by it).

        Phases: ``before`` (sent before the fault), ``detecting`` (between fault and
        detection), ``after-detection``, ``after-restore`` (fault lifted, not yet back),
        ``after-recovery`` (back in rotation).
        """
        frame = self.load.to_frame()
        sent = frame["sent_s"].to_numpy(float)
        phase = np.full(len(frame), "before", dtype=object)
        phase[sent >= self.fault_s] = "detecting"
        if not math.isnan(self.detected_s):
            phase[sent >= self.detected_s] = "after-detection"
        if not math.isnan(self.restore_s):
            phase[sent >= self.restore_s] = "after-restore"
        if not math.isnan(self.recovered_s):
            phase[sent >= self.recovered_s] = "after-recovery"
        frame["phase"] = phase
        frame["end_s"] = [r.end_s for r in self.load.records]
        frame["on_target"] = frame["group"].isin(self.groups)
        frame["in_flight_at_fault"] = (frame["sent_s"] < self.fault_s) & (
            frame["end_s"] >= self.fault_s
        )
        frame["drill"] = self.drill
        return frame

    def summary(self) -> dict[str, Any]:
        """The drill's numbers as one flat row (see :func:`drills_frame`)."""
        frame = self.to_frame()
        failed = frame["outcome"] != "ok"
        after = frame["phase"].isin(["after-detection", "after-recovery"])
        bound = self.health.predicted_detect_s if self.health else math.nan
        return {
            "drill": self.drill,
            "target": self.target,
            "strategy": self.strategy,
            "requests": len(frame),
            "ok": int((~failed).sum()),
            "failed": int(failed.sum()),
            "failed_in_flight": int((failed & frame["in_flight_at_fault"]).sum()),
            "failed_while_detecting": int((failed & (frame["phase"] == "detecting")).sum()),
            "failed_after_detection": int((failed & after).sum()),
            "outcomes": ", ".join(f"{k} {v}" for k, v in frame["outcome"].value_counts().items()),
            "detect_s": round(self.detect_s, 3),
            "predicted_detect_max_s": round(bound, 3),
            "recover_s": round(self.recover_s, 3),
            # the health-check part of recovery only: a recreated group also starts and loads
            "predicted_rise_max_s": round(self.health.predicted_rise_s, 3)
            if self.health
            else math.nan,
            "detection_source": self.detection_source,
        }


def drills_frame(results: Sequence[DrillResult]) -> pd.DataFrame:
    """One row per drill: requests by outcome, failures by phase, detect/recover vs predicted."""
    return pd.DataFrame([r.summary() for r in results])


# --- health settings from the manifests --------------------------------------------------
def _running_options(backend: Backend) -> dict[str, Any]:
    """The options the running twin was started with (its state), else the backend's own."""
    injector = fault_injector(backend)
    if injector is not None:
        from labutils.targets.twin.state import read_state

        options = (read_state(Path(injector.state_dir)) or {}).get("options")
        if options:
            return dict(options)
    own = getattr(backend, "options", None)  # TwinBackend's start options before it runs
    return dataclasses.asdict(own) if dataclasses.is_dataclass(own) else {}  # type: ignore[arg-type]


def running_manifests(backend: Backend) -> Path:
    """The rendered manifests folder the backend runs (the twin records it), else a fresh
    render of ``manifests/`` into a temporary folder."""
    injector = fault_injector(backend)
    if injector is not None:
        from labutils.targets.twin.state import read_state

        state = read_state(Path(injector.state_dir)) or {}
        manifests = (state.get("options") or {}).get("manifests")
        if manifests:
            return Path(manifests)
    from labutils.manifests import render

    out = Path(tempfile.mkdtemp(prefix="lab-drill-render-"))
    render(out_dir=out)
    return out


def health_settings(backend: Backend) -> dict[str, HealthSettings]:
    """Each zone's health check from the rendered Service annotations (x the twin's scale)."""
    from labutils.targets.twin.spec import load_twin_spec

    spec = load_twin_spec(running_manifests(backend))
    scale = float(_running_options(backend).get("time_scale", 1.0))
    return {
        z.zone: HealthSettings(
            z.zone,
            z.health.interval_s,
            z.health.unhealthy_threshold,
            z.health.healthy_threshold,
            scale,
        )
        for z in spec.zones
    }


def engines_label(backend: Backend) -> str:
    """What serves the requests, for plot titles (the twin's engines are simulated)."""
    if backend.target == "local":
        gpus = sorted(set(health_frame(backend)["gpu"]))
        return f"simulated {'/'.join(gpus)} engines on the local twin"
    return f"{backend.target} cluster"


def health_frame(backend: Backend) -> pd.DataFrame:
    """Per zone: what runs (model, GPU, simulated or not) and the health-check prediction.

    Read from the rendered manifests the backend runs; ``simulated`` is true on the local twin
    (its engines are the lab's simulator, labelled with the GPU they simulate).
    """
    from labutils.targets.twin.spec import load_twin_spec

    spec = load_twin_spec(running_manifests(backend))
    settings = health_settings(backend)
    rows = []
    for z in spec.zones:
        h = settings[z.zone]
        rows.append(
            {
                "zone": z.zone,
                "model": z.engine.model,
                "instance_type": z.instance_type,
                "gpu": z.gpu,
                "tp": z.engine.tensor_parallel_size,
                "pp": z.engine.pipeline_parallel_size,
                "groups": z.replicas,
                "weight": z.weight,
                "simulated": backend.target == "local",
                "check_interval_s": h.interval_s,
                "unhealthy_threshold": h.unhealthy_threshold,
                "healthy_threshold": h.healthy_threshold,
                "time_scale": h.time_scale,
                "predicted_detect_max_s": round(h.predicted_detect_s, 3),
            }
        )
    return pd.DataFrame(rows)


# --- observing HAProxy ---------------------------------------------------------------------
class _HaproxyWatch:
    """Polls ``show stat`` and records each server status change (on the load's clock)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.states: list[ServerState] = []
        self.last: dict[tuple[str, str], str] = {}
        self.reachable = True

    async def poll(self, t0_perf: float) -> None:
        from labutils.targets.twin.haproxy import runtime_command, server_stats

        try:
            text = await runtime_command(self.socket_path, "show stat", timeout_s=1.0)
            self.reachable = True
        except TwinError:
            self.reachable = False  # HAProxy restarting: no answer is a fact, not a state
            return
        now = time.perf_counter() - t0_perf
        for row in server_stats(text):
            key = (row.backend, row.server)
            if self.last.get(key) != row.status:
                self.last[key] = row.status
                self.states.append(ServerState(now, row.backend, row.server, row.status))

    def statuses(self, groups: Sequence[str]) -> list[str]:
        return [s for (_, server), s in self.last.items() if server in groups]

    def all_out(self, groups: Sequence[str]) -> bool:
        found = self.statuses(groups)
        return bool(found) and all(not s.startswith("UP") for s in found)

    def all_up(self, groups: Sequence[str]) -> bool:
        return _all_up(self.statuses(groups))


def _all_up(statuses: Sequence[str]) -> bool:
    # MAINT: a slot taken out on purpose (e.g. the HPA scaled that group away meanwhile)
    serving = [s for s in statuses if s != "MAINT"]
    return bool(serving) and all(s == "UP" for s in serving)


def _socket_of(backend: Backend) -> Path | None:
    injector = fault_injector(backend)
    if injector is None:
        return None
    path = Path(injector.state_dir) / "haproxy.sock"
    return path if path.exists() else None


# --- faults ------------------------------------------------------------------------------
def _pick_target(backend: Backend, drill: str, target: str | None) -> tuple[str, list[str]]:
    pods = backend.groups()
    leaders = pods[pods["role"] == "leader"] if not pods.empty else pods
    if drill == "lb-restart":
        return "haproxy", []
    if drill == "zone-kill":
        zones = sorted(set(leaders["zone"])) if not leaders.empty else []
        zone = target or (zones[0] if zones else "")
        if zone not in zones:
            raise ConfigError(f"drill {drill}: zone {zone!r}; choose one of: {', '.join(zones)}")
        return zone, sorted(leaders[leaders["zone"] == zone]["group"])
    names = sorted(leaders["group"]) if not leaders.empty else []
    group = target or (names[0] if names else "")
    if group not in names:
        raise ConfigError(f"drill {drill}: group {group!r}; choose one of: {', '.join(names)}")
    return group, [group]


def _kill_pid(pid: int, what: str) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        raise TwinError(f"{what} (pid {pid}) is not running; is the twin up?") from None


def _inject(backend: Backend, drill: str, target: str, memo: dict[str, Any]) -> None:
    injector = fault_injector(backend)
    if drill == "zone-kill" and injector is None:
        lws = backend.status()
        row = lws[lws["zone"] == target].iloc[0]
        memo["replicas"] = (str(row["lws"]), int(row["replicas"]))
        backend.scale(str(row["lws"]), 0)
        return
    if injector is None:
        raise ConfigError(
            f"drill {drill} needs the local twin's fault injection; on "
            f"{backend.target} run 'zone-kill' (choose one of: zone-kill)"
        )
    if drill == "zone-kill":
        injector.fail(zone=target, mode="kill")
    elif drill == "group-unhealthy":
        injector.fail(group=target, mode="unhealthy")
    elif drill == "group-slow":
        injector.fail(group=target, mode="slow")
    elif drill == "group-crash":
        pods = backend.groups()
        row = pods[(pods["group"] == target) & (pods["role"] == "leader")].iloc[0]
        _kill_pid(int(row["pid"]), f"group {target}'s engine")
    elif drill == "lb-restart":
        from labutils.targets.twin.state import read_state

        state = read_state(Path(injector.state_dir)) or {}
        proxy = next((p for p in state.get("processes", []) if p.get("role") == "haproxy"), None)
        if proxy is None:
            raise TwinError("no HAProxy recorded in the twin's state; is the twin up?")
        _kill_pid(int(proxy["pid"]), "HAProxy")


def _restore(backend: Backend, drill: str, target: str, memo: dict[str, Any]) -> None:
    if "replicas" in memo:
        lws, replicas = memo["replicas"]
        backend.scale(lws, replicas)
        return
    injector = fault_injector(backend)
    if injector is None:
        return
    if drill == "zone-kill":
        injector.restore(zone=target)
    elif drill in ("group-unhealthy", "group-slow"):
        injector.restore(group=target)


@contextlib.contextmanager
def zone_outage(backend: Backend, zone: str, *, ready_timeout_s: float = 900.0) -> Iterator[float]:
    """Take a whole zone down for the ``with`` block, then bring it back and wait until ready.

    The same fault as the ``zone-kill`` drill: on the twin every group of ``zone`` is killed
    and held down; on ``eks`` the zone's LeaderWorkerSet is scaled to 0 (its pods terminate
    gracefully first) and back to its replicas afterwards, so the groups load their model
    again. Yields the wall-clock time (``time.time()``) of the fault.

    Raises:
        ConfigError: ``zone`` is not one of the backend's zones.
    """
    zones = sorted(str(z) for z in backend.status()["zone"])
    if zone not in zones:
        raise ConfigError(f"zone {zone!r} is not deployed; choose one of: {', '.join(zones)}")
    memo: dict[str, Any] = {}
    at_s = time.time()
    _inject(backend, "zone-kill", zone, memo)
    try:
        yield at_s
    finally:
        _restore(backend, "zone-kill", zone, memo)
        backend.wait_ready(timeout_s=ready_timeout_s)


# --- the drill -----------------------------------------------------------------------------
async def _sleep_until(perf_s: float) -> None:
    delay = perf_s - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _strategy(backend: Backend) -> str:
    return str(_running_options(backend).get("strategy", "gateway"))


async def _drill(
    backend: Backend,
    drill: str,
    target: str | None,
    *,
    rate_rps: float,
    duration_s: float,
    fault_at_s: float,
    restore_at_s: float | None,
    input_tokens: int,
    output_tokens: int,
    seed: int,
    request_timeout_s: float,
    recover_timeout_s: float,
    progress: bool,
) -> DrillResult:
    name, groups = _pick_target(backend, drill, target)
    zones = health_settings(backend)
    health = None
    if groups:
        pods = backend.groups()
        zone = str(pods[pods["group"] == groups[0]]["zone"].iloc[0])
        health = zones.get(zone)
    ends = backend.endpoints()
    if drill == "lb-restart":
        groups = [g.group for g in ends.groups if g.ready]
    schedule = open_loop(
        rate_rps,
        arrival="poisson",
        duration_s=duration_s,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seed=seed,
    )
    socket = _socket_of(backend)
    watch = _HaproxyWatch(socket) if socket else None
    memo: dict[str, Any] = {}
    perf0 = time.perf_counter()  # ~ the load's offset 0 (exact value known afterwards)
    wall0 = time.time()
    load = asyncio.create_task(
        run_load_async(
            schedule,
            ends.gateway_url,
            ends.model,
            headers=ends.headers,
            timeout_s=request_timeout_s,
            progress=progress,
        )
    )
    stop = asyncio.Event()

    async def watch_loop() -> None:
        while watch is not None and not stop.is_set():
            await watch.poll(perf0)
            await asyncio.sleep(_POLL_S)

    watcher = asyncio.create_task(watch_loop())
    await _sleep_until(perf0 + fault_at_s)
    fault_perf = time.perf_counter()
    await asyncio.to_thread(_inject, backend, drill, name, memo)
    restore_perf = math.nan
    if restore_at_s is not None:
        await _sleep_until(perf0 + restore_at_s)
        restore_perf = time.perf_counter()
        await asyncio.to_thread(_restore, backend, drill, name, memo)
    result = await load
    # Keep watching (bounded, with a bar) until the failed part is back in rotation.
    lifted = drill in ("group-crash", "lb-restart") or restore_at_s is not None
    if watch is not None and lifted and drill != "group-slow":
        deadline = time.monotonic() + recover_timeout_s
        with progress_bar(
            total=1,
            desc=f"{drill}: waiting for {name} back in rotation",
            leave=False,
            disable=not progress,
        ) as bar:
            while (
                not _recovered(watch, groups, fault_perf - perf0)
                and time.monotonic() < deadline
                and not watcher.done()  # a crashed watcher raises below, not after the wait
            ):
                await asyncio.sleep(_POLL_S)
            bar.update(1)
    stop.set()
    await watcher
    if restore_at_s is None and drill in ("zone-kill", "group-unhealthy", "group-slow"):
        await asyncio.to_thread(_restore, backend, drill, name, memo)  # leave it as found
    shift = result.t0_perf_s - perf0 if not math.isnan(result.t0_perf_s) else 0.0
    states = [
        ServerState(s.time_s - shift, s.backend, s.server, s.status)
        for s in (watch.states if watch else [])
    ]
    out = DrillResult(
        drill=drill,
        target=name,
        groups=tuple(groups),
        strategy=_strategy(backend),
        load=result,
        health=health,
        fault_s=fault_perf - result.t0_perf_s,
        restore_s=restore_perf - result.t0_perf_s,
        states=states,
    )
    lws = backend.status()
    if drill == "zone-kill" and "weight" in lws and lws["weight"].sum() > 0:
        out.target_share = float(lws[lws["zone"] == name]["weight"].sum() / lws["weight"].sum())
    _locate(out, backend, wall0 - (perf0 - result.t0_perf_s), recover_timeout_s)
    return out


def _recovered(watch: _HaproxyWatch, groups: Sequence[str], fault_s: float) -> bool:
    return (
        watch.reachable
        and watch.all_up(groups)
        and any(s.time_s > fault_s and s.server in groups for s in watch.states)
    )


def _first_time(
    states: Sequence[ServerState], groups: Sequence[str], after_s: float, want: str
) -> float:
    """First time after ``after_s`` when every watched server of ``groups`` is out/up."""
    current: dict[tuple[str, str], str] = {}
    for s in states:
        if s.server not in groups:
            continue
        current[(s.backend, s.server)] = s.status
        if s.time_s < after_s:
            continue
        values = list(current.values())
        if want == "out" and values and all(not v.startswith("UP") for v in values):
            return s.time_s
        if want == "up" and _all_up(values):
            return s.time_s
    return math.nan


def _locate(
    result: DrillResult, backend: Backend, wall_t0: float, recover_timeout_s: float
) -> None:
    """Fill detected/recovered from HAProxy's states or the twin's events."""
    groups = result.groups
    if result.drill == "lb-restart":
        events = backend.events()
        if not events.empty and "kind" in events:
            restarted = events[
                (events["kind"] == "haproxy-restarted") & (events["time_s"] >= wall_t0)
            ]
            if not restarted.empty:
                result.detected_s = float(restarted["time_s"].iloc[0]) - wall_t0
                result.detection_source = "twin event haproxy-restarted"
        back = [s.time_s for s in result.states if s.time_s > result.fault_s]
        result.recovered_s = min(back) if back else math.nan
        result.notes.append("recovered = first HAProxy runtime answer after the restart")
        return
    if not result.states:
        result.detection_source = "not observable on this backend (no load-balancer state)"
        return
    result.detection_source = "HAProxy runtime API (show stat), polled every 50 ms"
    if result.drill == "group-slow":
        result.notes.append("health checks pass on a slow group: no detection expected")
        return
    result.detected_s = _first_time(result.states, groups, result.fault_s, "out")
    if result.drill == "group-crash":
        # The group is usually recreated before the health checks notice: the LWS controller
        # (the twin's supervisor) seeing the pod die is the detection, its readiness the end.
        failed = _event_times(backend, "group-failed", groups, wall_t0)
        ready = _event_times(backend, "group-ready", groups, wall_t0)
        if failed and (math.isnan(result.detected_s) or failed[0] < result.detected_s):
            result.detected_s = failed[0]
            result.detection_source = "twin event group-failed (LWS recreates the group)"
        later = [t for t in ready if t > result.detected_s]
        if later:
            result.recovered_s = later[0]
            return
    lifted = result.restore_s if not math.isnan(result.restore_s) else result.fault_s
    start = max(lifted, result.detected_s if not math.isnan(result.detected_s) else lifted)
    result.recovered_s = _first_time(result.states, groups, start, "up")
    if math.isnan(result.recovered_s) and (
        result.drill == "group-crash" or not math.isnan(result.restore_s)
    ):
        warnings.warn(
            f"drill {result.drill}: {result.target} not back in rotation within "
            f"{recover_timeout_s:.0f} s after the load",
            stacklevel=3,
        )


def _event_times(backend: Backend, kind: str, groups: Sequence[str], wall_t0: float) -> list[float]:
    events = backend.events()
    if events.empty or "kind" not in events:
        return []
    rows = events[
        (events["kind"] == kind) & events["object"].isin(groups) & (events["time_s"] >= wall_t0)
    ]
    return sorted(float(t) - wall_t0 for t in rows["time_s"])


def run_drill(
    backend: Backend,
    drill: str,
    target: str | None = None,
    *,
    rate_rps: float = 20.0,
    duration_s: float = 8.0,
    fault_at_s: float = 2.0,
    restore_at_s: float | None = None,
    input_tokens: int = 64,
    output_tokens: int = 16,
    seed: int = 0,
    request_timeout_s: float = 30.0,
    recover_timeout_s: float = 30.0,
    progress: bool = True,
) -> DrillResult:
    """Run one failure drill under open-loop load through the gateway.

    Args:
        backend: a running backend (the twin for every drill; EKS: ``zone-kill`` only).
        drill: one of :data:`DRILLS`.
        target: the zone (``zone-kill``) or group (``group-*``); default the first one.
        rate_rps: Poisson arrival rate of the load.
        duration_s: how long requests are scheduled (bounded: at most 120 s).
        fault_at_s: when the fault is injected, seconds after the load starts.
        restore_at_s: when the fault is lifted (``zone-kill``, ``group-unhealthy``,
            ``group-slow``); ``None`` lifts it after the load.
        input_tokens: prompt length of each request.
        output_tokens: tokens generated per request.
        seed: seeds the arrival times.
        request_timeout_s: per-request limit (a request past it is a ``timeout``).
        recover_timeout_s: how long to wait after the load for the part to be back.
        progress: show progress bars.

    Raises:
        ConfigError: unknown drill or target, or a drill the backend cannot inject.
        LoadTestError: unbounded or invalid load parameters.
    """
    if drill not in DRILLS:
        raise ConfigError(f"drill {drill!r}; choose one of: {', '.join(DRILLS)}")
    if not 0 < duration_s <= 120:
        raise ConfigError(f"duration_s={duration_s}: give 0 < duration_s <= 120")
    if not 0 <= fault_at_s < duration_s:
        raise ConfigError(f"fault_at_s={fault_at_s}: must fall inside the load (0..{duration_s})")
    if restore_at_s is not None and not fault_at_s < restore_at_s <= duration_s:
        raise ConfigError(
            f"restore_at_s={restore_at_s}: must be after fault_at_s and within duration_s"
        )
    return run_sync(
        _drill(
            backend,
            drill,
            target,
            rate_rps=rate_rps,
            duration_s=duration_s,
            fault_at_s=fault_at_s,
            restore_at_s=restore_at_s,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            seed=seed,
            request_timeout_s=request_timeout_s,
            recover_timeout_s=recover_timeout_s,
            progress=progress,
        )
    )


# --- checks ------------------------------------------------------------------------------
def check_drill(
    result: DrillResult, *, slack_s: float = 1.0, expect_failures: bool | None = None
) -> pd.DataFrame:
    """Check the failover lesson on a drill's measurements; raise if it does not hold.

    Holds when: every scheduled request has an outcome; failures are limited to requests in
    flight on the failed part or sent before it was taken out (none for faults that keep
    answering: unhealthy, slow); nothing fails once the health checks took it out; detection
    took at most the predicted bound (+ ``slack_s`` for a loaded machine); the part came back
    when its fault was lifted.

    Args:
        result: from :func:`run_drill`.
        slack_s: allowance on the predicted bound (scheduling noise on a busy machine).
        expect_failures: override whether any failure is acceptable (default by drill).

    Returns:
        The drill's one-row summary (as :func:`drills_frame`).

    Raises:
        ValidationError: the lesson does not hold; ``problems`` lists each finding.
    """
    frame = result.to_frame()
    problems: list[str] = []
    scheduled = result.load.schedule.num_requests
    if len(frame) != scheduled or frame["outcome"].isna().any():
        problems.append(f"{len(frame)} outcomes for {scheduled} scheduled requests")
    failed = frame[frame["outcome"] != "ok"]
    allowed = expect_failures
    if allowed is None:
        allowed = result.drill in ("zone-kill", "group-crash", "lb-restart")
    if not allowed and len(failed):
        problems.append(
            f"{len(failed)} requests failed ({failed['outcome'].iloc[0]}) although "
            f"{result.drill} keeps answering"
        )
    late = failed[failed["phase"].isin(["after-detection", "after-restore", "after-recovery"])]
    if result.drill != "lb-restart" and len(late):
        problems.append(
            f"{len(late)} requests failed after the health checks took "
            f"{result.target} out (first sent at {late['sent_s'].min():.2f} s)"
        )
    if result.drill == "group-crash":
        stray = failed[~failed["in_flight_at_fault"] & (failed["phase"] != "detecting")]
        if len(stray):
            problems.append(
                f"{len(stray)} failures were neither in flight nor sent before detection"
            )
    # Without the load balancer's states (a cluster's gateway) detection and recovery are not
    # observed: those parts are not checked, and the summary's detection_source says so.
    observed = bool(result.states)
    if result.drill not in ("group-slow", "lb-restart") and result.health is not None and observed:
        bound = result.health.predicted_detect_s + slack_s
        if math.isnan(result.detect_s):
            problems.append(f"{result.target} was never taken out of rotation")
        elif result.detect_s > bound:
            problems.append(
                f"detection took {result.detect_s:.2f} s > predicted "
                f"{result.health.predicted_detect_s:.2f} s + {slack_s} s slack"
            )
        after = frame[(frame["phase"] == "after-detection") & frame["on_target"]]
        if len(after):
            problems.append(f"{len(after)} requests reached {result.target} after detection")
    lifted = result.drill in ("group-crash", "lb-restart") or not math.isnan(result.restore_s)
    observed = observed or result.drill == "lb-restart"
    if lifted and result.drill != "group-slow" and observed and math.isnan(result.recovered_s):
        problems.append(f"{result.target} never came back into rotation")
    if problems:
        raise ValidationError(
            f"drill {result.drill} on {result.target}: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems,
        )
    return drills_frame([result])


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1)))


def check_no_failover(result: DrillResult, *, alpha: float = 1e-4) -> pd.DataFrame | str:
    """Check that a static weighted split (``weighted-strict``) did NOT fail over.

    After detection the dead zone's share of requests keeps failing (503): a weight is a split,
    not failover. Each request's zone is an independent draw, so the failures after detection
    follow Binomial(n, the zone's weight share); a gateway that failed over has none. Raises
    :class:`ValidationError` when so few failed that a static split would give that few with
    probability below ``alpha`` (a fixed fraction of the expected count would fail a fair
    split by chance about 1 % of the time at this lab's ~40 requests).

    Returns:
        The drill's summary row, or ``"not checkable ..."`` when the load balancer's states
        were not observed (a cluster's gateway): without detection there is no "after".
    """
    if not result.states:
        return (
            f"not checkable on {result.strategy}: detection is not observable on this backend, "
            "so the requests after it cannot be told apart"
        )
    frame = result.to_frame()
    after = frame[frame["phase"] == "after-detection"]
    if after.empty:
        raise ValidationError(
            f"drill {result.drill}: no requests sent after detection; "
            "lengthen the load or restore later"
        )
    failed = int((after["outcome"] != "ok").sum())
    if math.isnan(result.target_share):
        raise ValidationError(
            f"drill {result.drill}: the target's route weight is unknown; run a zone-kill drill"
        )
    if (1 - result.target_share) ** len(after) >= alpha:
        raise ValidationError(
            f"drill {result.drill}: only {len(after)} requests sent after detection, too few "
            "to tell a static split from failover; lengthen the load or raise the rate"
        )
    expected = len(after) * result.target_share
    chance = _binomial_cdf(failed, len(after), result.target_share)
    if chance < alpha:
        raise ValidationError(
            f"drill {result.drill} ({result.strategy}): only {failed} of {len(after)} requests "
            f"failed after detection; a static split should fail ~{expected:.0f} (the dead "
            f"zone's share; {failed} or fewer has probability {chance:.1e})"
        )
    return drills_frame([result])
