"""Start the twin of 3 zones x 2 groups, report the start time and the total RSS, stop it.

Usage: python benchmarks/twin_startup_memory.py [--engine sim|stub|"CMD ..."] [--runs N]
Targets (issue 4): start < 30 s, total RSS (engines + HAProxy + controller) < 1 GiB.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from twin_fixtures import STUB_ENGINE, write_rendered  # noqa: E402

from labutils.targets.twin import TwinBackend  # noqa: E402

ZONES = {"us-west-2a": 1, "us-west-2b": 1, "us-west-2c": 1}


def _engine(name: str) -> str | list[str]:
    if name == "stub":
        return STUB_ENGINE
    return "sim" if name == "sim" else shlex.split(name)


def _rss_bytes(twin: TwinBackend) -> tuple[int, int]:
    state = twin._state()
    pids = [state["controller"]["pid"]] + [p["pid"] for p in state["processes"]]
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        proc = psutil.Process(pid)
        procs[pid] = proc
        for child in proc.children(recursive=True):
            procs[child.pid] = child
    return sum(p.memory_info().rss for p in procs.values()), len(procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="sim")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rendered = write_rendered(Path(tmp) / "rendered", ZONES, replicas=2)
        for run in range(args.runs):
            twin = TwinBackend(Path(tmp) / "state", engine=_engine(args.engine))
            start = time.monotonic()
            try:
                twin.up(rendered, timeout_s=120)
                start_s = time.monotonic() - start
                time.sleep(1.0)
                rss, count = _rss_bytes(twin)
            finally:
                twin.down()
            print(
                f"run {run}: engine={args.engine} 3x2 start {start_s:.1f} s "
                f"(target < 30 s, ratio {start_s / 30:.2f}); RSS {rss / 2**20:.0f} MiB over "
                f"{count} processes (target < 1024 MiB, ratio {rss / 2**30:.2f})"
            )


if __name__ == "__main__":
    main()
