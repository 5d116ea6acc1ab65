"""Preflight for either target: one row per check with what is wrong and the fix.

Local checks (Python, cores, memory, HAProxy, Prometheus, state dir, a running twin, the
manifests) live
here; the cluster's (API, CRDs, controllers, GPUs, quota) are :mod:."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from labutils.config import default_state_dir, lab_target, manifests_dir
from labutils.errors import LabError

__all__ = [
    "MIN_CPU_CORES",
    "MIN_FREE_MEMORY_GIB",
    "MIN_HAPROXY",
    "MIN_PYTHON",
    "haproxy_version",
    "local_preflight",
    "preflight",
    "prometheus_version",
]


MIN_PYTHON = (3, 11)


MIN_CPU_CORES = 2


# The twin measured 343 MiB RSS for 3 zones x 2 groups (docs/twin.md); notebooks, the load
# client and JupyterLab need about as much again, so ask for 1 GiB of headroom.
MIN_FREE_MEMORY_GIB = 1.0


# master-worker reloads and the Prometheus exporter the twin uses exist since HAProxy 2.4.
MIN_HAPROXY = (2, 4)


_COLUMNS = ["check", "ok", "detail", "fix"]


def _row(check: str, ok: bool, detail: str, fix: str = "") -> dict[str, Any]:
    return {"check": check, "ok": bool(ok), "detail": detail, "fix": "" if ok else fix}


def _python_row() -> dict[str, Any]:
    version = ".".join(map(str, sys.version_info[:3]))
    want = ".".join(map(str, MIN_PYTHON))
    return _row(
        "Python",
        sys.version_info[:2] >= MIN_PYTHON,
        f"{version} ({sys.executable})",
        f"use Python >= {want} (environment.yml or a venv with pip install -e '.[dev]')",
    )


def _cpu_row() -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 0
    return _row(
        "CPU cores",
        cores >= MIN_CPU_CORES,
        f"{cores} usable",
        f"the twin needs >= {MIN_CPU_CORES} cores; stop other work or use a bigger machine",
    )


def _memory_row() -> dict[str, Any]:
    import psutil

    free_gib = psutil.virtual_memory().available / 1024**3
    return _row(
        "free memory",
        free_gib >= MIN_FREE_MEMORY_GIB,
        f"{free_gib:.1f} GiB available",
        f"free at least {MIN_FREE_MEMORY_GIB:g} GiB (close other programs or twins)",
    )


def haproxy_version(executable: str | None = None) -> tuple[int, ...] | None:
    """The HAProxy version on PATH (``haproxy -v``), or ``None`` when there is none."""
    exe = executable or shutil.which("haproxy")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(p) for p in match.groups() if p is not None) if match else None


def prometheus_version(executable: str | None = None) -> tuple[int, ...] | None:
    """The Prometheus server's version (``prometheus --version``), or ``None`` without one."""
    exe = executable or _prometheus_path()
    if not exe:
        return None
    try:
        run = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\d+)\.(\d+)\.(\d+)", run.stdout + run.stderr)
    return tuple(int(p) for p in match.groups()) if match else None


def _prometheus_path() -> str | None:
    # where the twin looks for it (PATH, else Debian's /usr/bin)
    from labutils.targets.twin.prometheus import prometheus_binary

    try:
        return prometheus_binary()
    except LabError:
        return None


def _prometheus_row() -> dict[str, Any]:
    # The twin runs its own Prometheus (scrapes the leaders, evaluates the alerting rules and
    # serves the HPA's metric through the adapter rule): without it the twin does not start.
    exe = _prometheus_path()
    fix = "run scripts/setup-system.sh (apt-get install prometheus)"
    if exe is None:
        return _row("Prometheus", False, "not on PATH", fix)
    version = prometheus_version(exe)
    if version is None:
        return _row("Prometheus", False, f"{exe}: 'prometheus --version' printed no version", fix)
    return _row("Prometheus", True, f"{'.'.join(map(str, version))} ({exe})")


def _haproxy_row() -> dict[str, Any]:
    exe = shutil.which("haproxy")
    version = haproxy_version(exe)
    want = ".".join(map(str, MIN_HAPROXY))
    if exe is None:
        return _row("HAProxy", False, "not on PATH", "run scripts/setup-system.sh (apt-get "
                    "install haproxy)")  # fmt: skip
    if version is None:
        return _row("HAProxy", False, f"{exe}: 'haproxy -v' printed no version",
                    "reinstall haproxy (scripts/setup-system.sh)")  # fmt: skip
    return _row(
        "HAProxy",
        version[:2] >= MIN_HAPROXY,
        f"{'.'.join(map(str, version))} ({exe})",
        f"install HAProxy >= {want} (Debian 12 ships 2.6)",
    )


def _state_dir_rows(state_dir: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".preflight-"):
            pass
        rows.append(_row("state dir writable", True, str(state_dir)))
    except OSError as exc:
        rows.append(_row("state dir writable", False, f"{state_dir}: {exc.strerror or exc}",
                         "set LAB_STATE_DIR to a writable folder"))  # fmt: skip
        return rows
    rows.append(_twin_row(state_dir))
    return rows


def _twin_row(state_dir: Path) -> dict[str, Any]:
    # A running twin is not a failure (the notebooks reuse it); state of a crashed one is:
    # its recorded processes may still hold ports and CPU until `labctl reset --yes`.
    from labutils.targets.twin import TwinBackend

    twin = TwinBackend(state_dir)
    leftovers = twin.leftovers()
    fix = f"labctl reset --target local --yes --state-dir {state_dir}"
    if twin.running():
        return _row("twin in this state dir", True,
                    f"already running ({len(leftovers['pids'])} processes); the notebooks "
                    "reuse it")  # fmt: skip
    if leftovers["pids"]:
        return _row("twin in this state dir", False,
                    f"stale: controller gone but {len(leftovers['pids'])} recorded processes "
                    f"alive (PIDs {leftovers['pids']})", fix)  # fmt: skip
    if (state_dir / "state.json").exists():
        return _row("twin in this state dir", True,
                    "not running (state of a stopped twin, no process left)")  # fmt: skip
    return _row("twin in this state dir", True, "not running, no state")


def _manifests_row(source: Path) -> dict[str, Any]:
    from labutils.manifests import render, validate

    fix = f"run 'labctl validate' and fix the lines it names under {source}"
    try:
        with tempfile.TemporaryDirectory(prefix="lab-preflight-") as out:
            files = render(out_dir=out, source=source)
            problems = validate(out)
    except LabError as exc:
        return _row("manifests render and validate", False, str(exc), fix)
    if problems:
        return _row("manifests render and validate", False,
                    f"{len(problems)} problem(s), first: {problems[0]}", fix)  # fmt: skip
    return _row("manifests render and validate", True, f"{len(files)} files from {source}, valid")


def local_preflight(
    state_dir: str | Path | None = None, source: str | Path | None = None
) -> pd.DataFrame:
    """Check this machine can run the local twin.

    Args:
        state_dir: the twin's state dir (default ``$LAB_STATE_DIR`` or the user cache).
        source: the source manifests folder (default ``manifests/`` or ``$LAB_MANIFESTS``).

    Returns:
        One row per check: check, ok, detail, fix (empty where ok).
    """
    rows = [_python_row(), _cpu_row(), _memory_row(), _haproxy_row(), _prometheus_row()]
    rows += _state_dir_rows(Path(state_dir) if state_dir else default_state_dir())
    rows.append(_manifests_row(Path(source) if source else manifests_dir()))
    return pd.DataFrame(rows, columns=_COLUMNS)


def preflight(target: str | None = None, **options: Any) -> pd.DataFrame:
    """Run the checks of ``target`` (default ``$LAB_TARGET``, else ``local``).

    Args:
        target: ``local`` or ``eks``.
        **options: ``state_dir``/``source`` for local; ``kubeconfig``, ``context``,
            ``namespace`` for eks.

    Returns:
        One row per check: check, ok, detail, fix.
    """
    if lab_target(target) == "local":
        return local_preflight(**options)
    from labutils.targets.eks.preflight import preflight as cluster_preflight

    return cluster_preflight(**options)
