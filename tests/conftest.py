"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

# Progress bars are for people watching; in the suite (and the notebooks nbval runs in kernels
# that inherit this environment) they would only fill logs and stored outputs.
os.environ.setdefault("LAB_PROGRESS", "0")


@pytest.fixture
def data_dir() -> Path:
    """Recorded real data (each file's origin is in tests/data/README.md)."""
    return DATA


@pytest.fixture(scope="module")
def start_sim() -> Iterator[Callable[[str, int], str]]:
    """Start ``python -m labutils.sim serve`` processes on free ports; stopped after the module.

    The returned function takes the served model name and ``--max-model-len`` and returns the
    server's base URL (read from the JSON line the simulator prints once it listens).
    """
    procs: list[subprocess.Popen[str]] = []

    def _start(served_model_name: str, max_model_len: int = 1024) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labutils.sim", "serve", "meta-llama/Llama-3.1-8B-Instruct",
             "--port", "0", "--served-model-name", served_model_name,
             "--max-model-len", str(max_model_len)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        return f"http://127.0.0.1:{json.loads(proc.stdout.readline())['port']}"

    try:
        yield _start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.cluster`` tests unless a real kubeconfig is given."""
    if os.environ.get("LAB_KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: set LAB_KUBECONFIG to a kubeconfig")
    for item in items:
        # the marker itself: ``"cluster" in item.keywords`` also matches a folder named cluster
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)
