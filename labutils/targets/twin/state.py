"""The twin's state dir: what it started (PIDs with start times, ports), its events, its logs.

Layout of ``<state-dir>/``: ``state.json`` (written atomically by the controller),
``events.jsonl`` (one JSON object per line), ``haproxy.cfg``, ``zones.map``, ``*.sock`` and
``logs/``. Processes are recorded with their ``create_time`` so a recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from labutils.config import default_state_dir

__all__ = [
    "ProcessRecord",
    "append_event",
    "kill_recorded",
    "read_events",
    "read_state",
    "record_of",
    "resolve_state_dir",
    "write_state",
]

ProcessRecord = dict[str, Any]  # {"pid": int, "create_time": float, "role": str, ...}


def resolve_state_dir(state_dir: str | Path | None) -> Path:
    """``state_dir`` or the default (``$LAB_STATE_DIR`` or the user cache), created."""
    path = Path(state_dir) if state_dir else default_state_dir()
    path.mkdir(parents=True, exist_ok=True)
    (path / "logs").mkdir(exist_ok=True)
    return path


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace ``state.json`` atomically (readers never see half a file)."""
    tmp = state_dir / f".state.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(state_dir / "state.json")


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The last ``state.json``, or ``None`` when the twin never started here."""
    try:
        data = json.loads((state_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def append_event(state_dir: Path, event: dict[str, Any]) -> None:
    """Append one event (a JSON object) to ``events.jsonl``."""
    with (state_dir / "events.jsonl").open("a") as fh:
        fh.write(json.dumps(event, default=str) + "\n")


def read_events(state_dir: Path) -> list[dict[str, Any]]:
    """Every event recorded in the state dir, oldest first."""
    path = state_dir / "events.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return events


def record_of(pid: int, role: str, **extra: Any) -> ProcessRecord:
    """A record for a process just started (its PID plus kernel start time)."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = 0.0
    return {"pid": pid, "create_time": created, "role": role, **extra}


def _alive(record: ProcessRecord) -> psutil.Process | None:
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record.get("create_time", 0))) > 0.5:
            return None  # the PID was reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, KeyError, ValueError):
        return None


def kill_recorded(records: list[ProcessRecord], grace_s: float = 3.0) -> list[int]:
    """Stop recorded processes (and their children): SIGTERM, then SIGKILL after ``grace_s``.

    Returns:
        The PIDs that were still running and were stopped.
    """
    procs: dict[int, psutil.Process] = {}
    for record in records:
        proc = _alive(record)
        if proc is None:
            continue
        procs[proc.pid] = proc
        try:
            for child in proc.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            pass
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    time.sleep(0)  # let the kernel reap before callers probe ports
    return sorted(procs)
