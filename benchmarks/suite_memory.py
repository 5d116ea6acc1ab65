"""Peak memory of the whole test suite: total RSS of pytest and every process it starts.

Usage: python benchmarks/suite_memory.py [PYTEST ARGS...]   (default: the full default suite)
Target (non-negotiable 6): the whole suite under 8 GiB peak. Samples the process tree every
0.25 s (children come and go: engines, HAProxy, JupyterLab, kernels) and prints the peak sum,
the peak single process and the run time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


def _tree_rss(root: psutil.Process) -> tuple[int, int]:
    total = biggest = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for proc in procs:
        try:
            rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        biggest = max(biggest, rss)
    return total, biggest


def main(argv: list[str]) -> int:
    """Run pytest under the sampler and print the peaks."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    root = psutil.Process(proc.pid)
    peak_total = peak_single = 0
    while proc.poll() is None:
        total, single = _tree_rss(root)
        peak_total, peak_single = max(peak_total, total), max(peak_single, single)
        time.sleep(0.25)
    elapsed = time.monotonic() - start
    print(f"suite exit status: {proc.returncode}")
    print(f"suite wall time: {elapsed:.0f} s")
    print(
        f"peak total RSS (pytest + children): {peak_total / GIB:.2f} GiB "
        f"({peak_total / (8 * GIB):.0%} of the 8 GiB budget)"
    )
    print(f"peak single process RSS: {peak_single / GIB:.2f} GiB")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
