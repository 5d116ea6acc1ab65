"""``TwinBackend``: the notebooks' :class:`~labutils.protocol.Backend` for the local twin.

``up`` starts the controller process (``labutils.targets.twin.controller``) detached, records it in
the state dir and waits (progress bar) until every LWS is Available; every other call reads
the state dir or talks to the controller's control API on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd

from labutils._aio import run_sync
from labutils._progress import progress_bar, show_progress
from labutils.config import project_root
from labutils.errors import EndpointError, TwinError, WaitTimeout
from labutils.metrics.prometheus import HttpPrometheus
from labutils.protocol import Endpoints, GroupEndpoint, MetricsScrape
from labutils.targets.twin.haproxy import STRATEGIES, haproxy_binary
from labutils.targets.twin.options import TwinOptions
from labutils.targets.twin.ports import listening_ports
from labutils.targets.twin.spec import TwinSpec, load_twin_spec, manifests_digest
from labutils.targets.twin.state import (
    kill_recorded,
    read_events,
    read_state,
    record_of,
    resolve_state_dir,
)

__all__ = ["FAULT_MODES", "TwinBackend"]

FAULT_MODES = ("kill", "unhealthy", "slow")


def _last_error(log_path: Path) -> str:
    """The controller log's last error line (a LabError's message or a traceback's last line)."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log written"
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if "error" in line.lower() or "Error" in line:
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def _alive(record: dict[str, Any] | None) -> bool:
    import psutil

    if not record:
        return False
    try:
        proc = psutil.Process(int(record["pid"]))
        same = abs(proc.create_time() - float(record.get("create_time", 0))) < 0.5
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, ValueError):
        return False


class TwinBackend:
    """The local twin as a lab backend (``LAB_TARGET=local``).

    Args:
        state_dir: where the twin records what it started (default: the user cache dir).
        strategy: gateway routing, one of ``weighted``, ``weighted-strict``, ``least-request``,
            ``queue-aware``.
        engine: ``sim`` (the simulated engine), ``vllm`` (real vLLM, CPU build, serving a
            tiny model: ``make real-engine`` first; at most 3 engines) or a command prefix
            (list) taking the ``serve MODEL ...`` flags of ``labctl sim serve``.
        model_load_s: simulated model-load time of every group; ``None`` (default): the
            first rollout's groups load in seconds, a group added later takes what a real GPU
            group takes (node launch, image pull, weight load; ``TwinOptions.group_load_s``)
            times ``time_scale``.
        sync_period_s: HPA sync period.
        downscale_stabilization_s: the controller's default scale-down window.
        time_scale: multiplies the NLB health-check intervals, the PodMonitors' scrape
            intervals, the alerting rules' ``for:`` windows and the derived group start times
            (< 1 for fast drills/tests; the HPA drill's factor shows the scale-up lag).
        scrape_interval_s: the twin's Prometheus scrapes (and evaluates rules) this often
            instead of the PodMonitors' ``interval`` x ``time_scale``.
        engine_calibration: a calibration file for the simulated engines
            (``labctl sim serve --calibration``); ``None``: ``engine_calibration`` of
            ``manifests/lab.yaml`` (used with ``engine="sim"`` only), ``""``: none.
    """

    target = "local"

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        strategy: str = "weighted",
        engine: str | list[str] = "sim",
        model_load_s: float | None = None,
        sync_period_s: float = 15.0,
        downscale_stabilization_s: float = 300.0,
        time_scale: float = 1.0,
        scrape_interval_s: float | None = None,
        engine_calibration: str | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise TwinError(f"strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
        self.state_dir = resolve_state_dir(state_dir)
        if engine == "sim":
            command = [sys.executable, "-m", "labutils.sim"]
        elif engine == "vllm":
            # Real vLLM (CPU build, tiny model) behind the same interface: labutils.realengine.
            command = [sys.executable, "-m", "labutils.realengine"]
        elif isinstance(engine, list):
            command = list(engine)
        else:
            raise TwinError(f"engine {engine!r}; choose 'sim', 'vllm' or a command list")
        if engine == "vllm" and engine_calibration:
            raise TwinError(
                "engine_calibration applies to the simulated engine; the real vLLM engine "
                "measures its own steps (drop engine_calibration or use engine='sim')"
            )
        self._simulated = engine == "sim"
        self._engine_calibration = engine_calibration
        self.options = TwinOptions(
            strategy=strategy,
            engine_command=command,
            model_load_s=model_load_s,
            sync_period_s=sync_period_s,
            downscale_stabilization_s=downscale_stabilization_s,
            time_scale=time_scale,
            scrape_interval_s=scrape_interval_s,
        )

    # --- lifecycle -----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = read_state(self.state_dir)
        if state is None or not _alive(state.get("controller")):
            raise TwinError(f"no twin running in {self.state_dir}; start it with 'labctl twin up'")
        return state

    def running(self) -> bool:
        """Whether a twin controller is alive in this state dir."""
        state = read_state(self.state_dir)
        return bool(state and _alive(state.get("controller")))

    def up(self, rendered_dir: str | Path | None = None, *, wait: bool = True,
           timeout_s: float = 120.0) -> pd.DataFrame:  # fmt: skip
        """Start the twin from the rendered manifests (idempotent) and wait until ready.

        An already running twin with the same manifests and options is left alone; changed
        manifests are applied live (weights, health checks, headers, replicas, HPAs; HAProxy
        reloads hitlessly); a changed engine command or other twin options restart the twin.

        Raises:
            TwinError: the manifests are invalid or a process could not start.
            WaitTimeout: not every LWS became Available within ``timeout_s``.
        """
        haproxy_binary()  # a missing HAProxy is named here, not only in the controller's log
        manifests = Path(rendered_dir or self._render_default()).resolve()
        spec = load_twin_spec(manifests)  # fail here, with file names, not in the controller
        digest = manifests_digest(manifests)
        options = TwinOptions(
            **{**asdict(self.options), "manifests": str(manifests), "manifests_digest": digest,
               "engine_calibration": self._calibration(spec)}
        )  # fmt: skip
        for zone in spec.zones:  # a zone the start-time model cannot price fails here
            options.group_load_s(zone, "added")
        if self.running():
            state = self._state()
            running = dict(state.get("options") or {})
            unchanged = {k: v for k, v in asdict(options).items() if k != "manifests_digest"}
            if {k: running.get(k) for k in unchanged} == unchanged:
                if running.get("manifests_digest") == digest:
                    return self.wait_ready(timeout_s) if wait else self.status()
                body = {"manifests": str(manifests), "digest": digest}
                if self._post(state["control_url"] + "/apply", body).get("applied"):
                    time.sleep(0.3)  # let the controller start/stop groups before waiting
                    return self.wait_ready(timeout_s) if wait else self.status()
            self.down()  # other settings or a changed engine: start again
        for name in ("state.json", "events.jsonl"):
            (self.state_dir / name).unlink(missing_ok=True)
        log = (self.state_dir / "logs" / "controller.log").open("ab")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(project_root()), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "labutils.targets.twin.controller", "--state-dir",
             str(self.state_dir), "--options", json.dumps(asdict(options))],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )  # fmt: skip
        log.close()
        (self.state_dir / "controller.json").write_text(
            json.dumps(record_of(proc.pid, "controller"))
        )
        deadline = time.monotonic() + min(timeout_s, 30.0)
        while read_state(self.state_dir) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                self.down()
                log_path = self.state_dir / "logs" / "controller.log"
                what = "exited" if proc.poll() is not None else "did not start in 30 s"
                raise TwinError(
                    f"twin controller {what}: {_last_error(log_path)}; full log: {log_path}"
                )
            time.sleep(0.05)
        return self.wait_ready(timeout_s) if wait else self.status()

    apply = up

    def _calibration(self, spec: TwinSpec) -> str:
        """The engines' calibration file, checked against every zone's GPU, model and layout."""
        from labutils import catalog
        from labutils.config import load_config, manifests_dir
        from labutils.errors import SimulatorError
        from labutils.sim.perf import EngineConfig, load_calibration

        where = "engine_calibration"
        path = self._engine_calibration
        if path is None:
            lab_yaml = manifests_dir() / "lab.yaml"
            if not self._simulated or not lab_yaml.is_file():
                return ""
            path, where = (
                load_config(lab_yaml).engine_calibration,
                f"{lab_yaml}: engine_calibration",
            )
        if not path:
            return ""
        try:
            calibration = load_calibration(path)
        except SimulatorError as exc:
            raise TwinError(f"{where}: {exc}") from None
        for zone in spec.zones:
            eng = zone.engine
            cfg = EngineConfig(
                catalog.model(eng.model),
                catalog.gpu(zone.gpu),
                tensor_parallel_size=eng.tensor_parallel_size,
                pipeline_parallel_size=eng.pipeline_parallel_size,
            )
            if not calibration.matches(cfg):
                raise TwinError(
                    f"{where}: {path} is for {calibration.model} on one {calibration.gpu}, but "
                    f"{zone.lws} runs {cfg.model.alias} on {zone.gpu} at TP="
                    f"{eng.tensor_parallel_size} PP={eng.pipeline_parallel_size}; record one "
                    "for that layout with benchmarks/gpu_step_profile.py or leave the key empty"
                )
        return str(Path(path).resolve())

    def _render_default(self) -> Path:
        # Without a folder, render manifests/ + lab.yaml into the state dir (as `labctl
        # render` would), so notebooks can call apply() right away.
        from labutils.manifests import render

        out = self.state_dir / "rendered"
        render(out_dir=out)
        return out

    def wait_ready(self, timeout_s: float = 120.0) -> pd.DataFrame:
        """Wait with a progress bar until every LWS is Available; return :meth:`status`."""
        deadline = time.monotonic() + timeout_s
        with progress_bar(total=1, desc="twin groups ready", unit="group", leave=False) as bar:
            while True:
                state = self._state()
                rows = state.get("lws", [])
                want = sum(r["replicas"] for r in rows)
                ready = sum(min(r["ready_replicas"], r["replicas"]) for r in rows)
                show_progress(bar, ready, max(want, 1))
                if rows and ready >= want:
                    return self.status()
                if time.monotonic() > deadline:
                    last = ", ".join(
                        f"{r['lws']} {r['ready_replicas']}/{r['replicas']} ready" for r in rows
                    )
                    errors = [g["last_error"] for g in state.get("groups", [])
                              if g.get("last_error")]  # fmt: skip
                    hint = f"; {errors[0]}" if errors else f"; see {self.state_dir / 'logs'}"
                    raise WaitTimeout(
                        f"twin in {self.state_dir} not ready after {timeout_s:.0f}s: {last}{hint}"
                    )
                time.sleep(0.1)

    def down(self) -> list[int]:
        """Stop everything this twin started (idempotent); returns the PIDs that were running."""
        records: list[dict[str, Any]] = []
        state = read_state(self.state_dir)
        controller_file = self.state_dir / "controller.json"
        if controller_file.exists():
            records.append(json.loads(controller_file.read_text()))
        if state:
            records += [state.get("controller") or {}, *state.get("processes", [])]
        running = sorted({int(r["pid"]) for r in records if r.get("pid") and _alive(r)})
        if state and state.get("control_url") and _alive(state.get("controller")):
            try:  # the controller drains and stops its children itself
                self._post(state["control_url"] + "/shutdown", {})
                deadline = time.monotonic() + 15
                while _alive(state.get("controller")) and time.monotonic() < deadline:
                    time.sleep(0.05)
            except EndpointError:
                pass
        kill_recorded([r for r in records if r.get("pid")])  # whatever is left (crashes)
        controller_file.unlink(missing_ok=True)
        if not any(_alive(r) for r in records if r.get("pid")):
            # No running state may outlive the processes (a reset leaves nothing behind);
            # events.jsonl, logs/ and rendered/ stay to explain what happened.
            for name in ("state.json", "haproxy.sock", "master.sock"):
                (self.state_dir / name).unlink(missing_ok=True)
        return running

    def leftovers(self) -> dict[str, Any]:
        """Recorded processes still alive and their listening ports (empty after ``down``)."""
        state = read_state(self.state_dir) or {}
        records = [state.get("controller") or {}, *state.get("processes", [])]
        alive = {int(r["pid"]) for r in records if r.get("pid") and _alive(r)}
        return {"pids": sorted(alive), "ports": sorted(listening_ports(alive))}

    reset_twin = down

    def reset(self, *, yes: bool = False) -> pd.DataFrame:
        """Stop the twin (``yes``) or list what would be stopped (dry run)."""
        state = read_state(self.state_dir) or {}
        rows = [
            {"kind": r.get("role"), "pid": r.get("pid"), "alive": _alive(r)}
            for r in [state.get("controller") or {}, *state.get("processes", [])]
            if r.get("pid")
        ]
        if yes:
            self.down()
            for row in rows:
                row["deleted"] = True
        return pd.DataFrame(rows, columns=["kind", "pid", "alive", *(["deleted"] if yes else [])])

    # --- reads ---------------------------------------------------------------------------
    def status(self) -> pd.DataFrame:
        """One row per LWS: zone, replicas, ready_replicas, updated_replicas, conditions."""
        rows = self._state().get("lws", [])
        cols = ["zone", "lws", "replicas", "ready_replicas", "updated_replicas", "conditions",
                "size", "weight"]  # fmt: skip
        return pd.DataFrame(rows, columns=cols)

    def groups(self) -> pd.DataFrame:
        """One row per pod (leader + workers of every group), like ``kubectl get pods``."""
        rows = []
        for g in self._state().get("groups", []):
            for worker in range(int(g.get("size", 1))):
                name = g["group"] if worker == 0 else f"{g['group']}-{worker}"
                rows.append({
                    "zone": g["zone"], "lws": g["lws"], "group": g["group"], "pod": name,
                    "role": "leader" if worker == 0 else "worker", "node": "local",
                    "ready": g["ready"], "phase": g["phase"], "restarts": g["restarts"],
                    "fault": g["fault"], "pid": g["pid"] if worker == 0 else None,
                    "url": g["url"] if worker == 0 else "",
                })  # fmt: skip
        return pd.DataFrame(rows)

    def endpoints(self) -> Endpoints:
        """The gateway, per-zone and per-group URLs."""
        state = self._state()
        groups = tuple(
            GroupEndpoint(g["zone"], g["lws"], g["group"], g["url"], bool(g["ready"]))
            for g in state.get("groups", [])
        )
        return Endpoints(
            gateway_url=state["gateway_url"],
            model=state.get("model", ""),
            zone_urls=dict(state.get("zone_urls", {})),
            groups=groups,
        )

    @property
    def prometheus_url(self) -> str:
        """The twin's Prometheus (web UI and HTTP API), on 127.0.0.1."""
        url = str(self._state().get("prometheus_url") or "")
        if not url:
            raise TwinError(f"the twin in {self.state_dir} runs no Prometheus; restart it")
        return url

    def prometheus(self) -> HttpPrometheus:
        """The twin's Prometheus HTTP API (for :func:`labutils.metrics.prometheus.query`)."""
        return HttpPrometheus(self.prometheus_url)

    def wait_scraped(self, timeout_s: float = 60.0) -> pd.DataFrame:
        """Wait until Prometheus scraped every ready group leader successfully once.

        Prometheus's service discovery passes new targets on at most every 5 s and a target's
        first scrape falls somewhere within its interval, so this takes up to 5 s + one
        interval after a group became ready.

        Returns:
            One row per active target: ``pod``, ``health``, ``scrape_url``, ``last_error``.

        Raises:
            WaitTimeout: some ready leader is not scraped by then (named, with its error).
        """
        api = self.prometheus()
        deadline = time.monotonic() + timeout_s
        while True:
            ready = {g.group for g in self.endpoints().groups if g.ready}
            body = api.get("targets", {"state": "active"})
            targets = (body.get("data") or {}).get("activeTargets") or []
            rows = [
                {
                    "pod": t.get("labels", {}).get("pod", ""),
                    "job": t.get("labels", {}).get("job", ""),
                    "health": t.get("health", ""),
                    "scrape_url": t.get("scrapeUrl", ""),
                    "last_error": t.get("lastError", ""),
                }
                for t in targets
            ]
            up = {r["pod"] for r in rows if r["health"] == "up"}
            if ready and ready <= up:
                return pd.DataFrame(rows)
            if time.monotonic() > deadline:
                missing = sorted(ready - up)
                errors = {r["pod"]: r["last_error"] for r in rows if r["last_error"]}
                detail = "; ".join(f"{p}: {errors.get(p, 'not discovered')}" for p in missing)
                if not targets:
                    detail += " (no targets: does the rendered manifests' PodMonitor select the "
                    detail += "leaders?)"
                raise WaitTimeout(
                    f"Prometheus {api.url} has not scraped every ready leader after "
                    f"{timeout_s:.0f} s: {detail or 'no ready group'}"
                )
            time.sleep(0.25)

    @property
    def stats_url(self) -> str:
        """HAProxy's Prometheus exporter (per-server sessions, queue, status, weight)."""
        return str(self._state()["stats_url"])

    def scrape_metrics(self) -> list[MetricsScrape]:
        """Scrape every ready group leader's ``/metrics`` once (failures carry ``error``)."""
        groups = [g for g in self.endpoints().groups if g.ready and g.url]

        async def scrape_all() -> list[MetricsScrape]:
            out = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                for g in groups:
                    try:
                        async with s.get(g.url + "/metrics") as r:
                            r.raise_for_status()
                            text = await r.text()
                        out.append(MetricsScrape(g.zone, g.group, time.time(), text))
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        out.append(MetricsScrape(g.zone, g.group, time.time(), "", str(exc)))
            return out

        return run_sync(scrape_all())

    def events(self) -> pd.DataFrame:
        """Everything the twin recorded: group lifecycle, faults, scaling, HPA decisions."""
        events = read_events(self.state_dir)
        frame = pd.DataFrame(events)
        if frame.empty:
            return pd.DataFrame(columns=["time_s", "kind", "object", "message"])
        return frame

    def hpa_events(self) -> pd.DataFrame:
        """The HPA decisions with their inputs (one row per sync per HPA)."""
        frame = self.events()
        if "kind" not in frame or frame.empty:
            return frame
        return frame[frame["kind"] == "hpa"].dropna(axis=1, how="all").reset_index(drop=True)

    # --- changes -------------------------------------------------------------------------
    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async def post() -> dict[str, Any]:
            timeout = aiohttp.ClientTimeout(total=30)
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.post(url, json=body) as r,
            ):
                data: dict[str, Any] = await r.json()
                if r.status >= 400:
                    raise TwinError(str(data.get("error", f"{url}: HTTP {r.status}")))
                return data

        try:
            return run_sync(post())
        except aiohttp.ClientError as exc:
            raise EndpointError(f"{url}: {exc}; is the twin up ('labctl twin status')?") from None

    def scale(self, lws: str, replicas: int) -> None:
        """Set an LWS's replicas (groups); new groups start, removed ones are drained first."""
        self._post(self._state()["control_url"] + "/scale", {"lws": lws, "replicas": replicas})

    def hpa_sync(self) -> None:
        """Run one HPA sync now (besides the periodic loop), e.g. in a notebook drill."""
        self._post(self._state()["control_url"] + "/hpa-sync", {})

    def fail(self, *, zone: str | None = None, group: str | None = None,
             mode: str = "kill") -> list[str]:  # fmt: skip
        """Inject a fault into a zone's groups or one group; returns the groups affected.

        ``kill`` stops the engines and holds them down (a lost zone) until :meth:`restore`;
        ``unhealthy`` makes ``/health`` fail; ``slow`` slows generation.
        """
        if mode not in FAULT_MODES:
            raise TwinError(f"fault mode {mode!r}; choose one of: {', '.join(FAULT_MODES)}")
        body = {"zone": zone, "group": group, "mode": mode}
        return list(self._post(self._state()["control_url"] + "/fail", body)["groups"])

    def restore(self, *, zone: str | None = None, group: str | None = None) -> list[str]:
        """Undo :meth:`fail` (killed groups are recreated and rejoin after health checks)."""
        body = {"zone": zone, "group": group}
        return list(self._post(self._state()["control_url"] + "/restore", body)["groups"])
