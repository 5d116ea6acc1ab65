"""The state dir's process records: kill only what the twin started (PID + start time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from labutils.targets.twin.state import (
    append_event,
    kill_recorded,
    read_events,
    read_state,
    record_of,
    write_state,
)


def test_kill_recorded_checks_start_time() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = record_of(proc.pid, "engine")
        stale = {**record, "create_time": record["create_time"] - 100.0}  # a recycled PID
        assert kill_recorded([stale], grace_s=0.5) == []
        assert proc.poll() is None
        assert kill_recorded([record], grace_s=2.0) == [proc.pid]
        assert proc.wait(timeout=5) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_state_and_events_round_trip(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None and read_events(tmp_path) == []
    write_state(tmp_path, {"phase": "ready"})
    assert read_state(tmp_path) == {"phase": "ready"}
    append_event(tmp_path, {"kind": "fault", "object": "g"})
    with (tmp_path / "events.jsonl").open("a") as fh:
        fh.write('{"kind": "cut')  # a line cut by a crash is skipped
    assert read_events(tmp_path) == [{"kind": "fault", "object": "g"}]
