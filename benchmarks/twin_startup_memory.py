"""Start the twin of 3 zones x 2 groups, report the start time and the total RSS, stop it.

Usage: python benchmarks/twin_startup_memory.py [--engine sim|stub|"CMD ..."] [--runs N]
           [--scrape-interval-s S]
Targets (issues 4, 14): start < 30 s, total RSS (engines + HAProxy + Prometheus + controller)
< 1 GiB. "scraped" is when Prometheus has scraped every leader once (discovery hands targets on
every 5 s, the first scrape falls within one interval: the PodMonitor's 15 s by default); RSS is
measured after that and a few more scrapes, Prometheus's share reported on its own.
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


def _rss_bytes(twin: TwinBackend) -> tuple[int, int, int]:
    state = twin._state()
    pids = [state["controller"]["pid"]] + [p["pid"] for p in state["processes"]]
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        proc = psutil.Process(pid)
        procs[pid] = proc
        for child in proc.children(recursive=True):
            procs[child.pid] = child
    prom = [p["pid"] for p in state["processes"] if p.get("role") == "prometheus"]
    prom_rss = sum(procs[pid].memory_info().rss for pid in prom if pid in procs)
    return sum(p.memory_info().rss for p in procs.values()), len(procs), prom_rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="sim")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--scrape-interval-s", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rendered = write_rendered(Path(tmp) / "rendered", ZONES, replicas=2)
        for run in range(args.runs):
            twin = TwinBackend(
                Path(tmp) / "state",
                engine=_engine(args.engine),
                scrape_interval_s=args.scrape_interval_s,
            )
            start = time.monotonic()
            try:
                twin.up(rendered, timeout_s=120)
                start_s = time.monotonic() - start
                twin.wait_scraped(timeout_s=60)
                scraped_s = time.monotonic() - start
                time.sleep(5.0)
                rss, count, prom_rss = _rss_bytes(twin)
            finally:
                twin.down()
            print(
                f"run {run}: engine={args.engine} 3x2 start {start_s:.1f} s "
                f"(target < 30 s, ratio {start_s / 30:.2f}), every leader scraped at "
                f"{scraped_s:.1f} s; RSS {rss / 2**20:.0f} MiB over {count} processes "
                f"(target < 1024 MiB, ratio {rss / 2**30:.2f}), Prometheus "
                f"{prom_rss / 2**20:.0f} MiB"
            )


if __name__ == "__main__":
    main()
