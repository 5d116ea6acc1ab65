"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """Recorded real data (copied from ../shared/fixtures)."""
    return DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.cluster`` tests unless a real kubeconfig is given."""
    if os.environ.get("LAB_KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: set LAB_KUBECONFIG to a kubeconfig")
    for item in items:
        # the marker itself: ``"cluster" in item.keywords`` also matches a folder named cluster
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)
