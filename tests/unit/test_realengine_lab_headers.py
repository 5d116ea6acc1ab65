"""The lab-headers middleware that real vLLM engines load (run here with a stand-in app)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "labutils" / "realengine" / "vllm_plugins"


class _Response:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {"content-type": "text/event-stream"}


def _request(path: str = "/v1/completions", method: str = "POST") -> SimpleNamespace:
    return SimpleNamespace(url=SimpleNamespace(path=path), method=method)


def _load(monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    for name in ("LAB_ZONE", "LAB_GROUP"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    sys.modules.pop("lab_headers", None)
    return importlib.import_module("lab_headers")


def test_headers_name_zone_and_group(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load(monkeypatch, LAB_ZONE="us-west-2b", LAB_GROUP="vllm-us-west-2b-1")

    async def call_next(request: object) -> _Response:
        return _Response()

    response = asyncio.run(module.add_lab_headers(_request(), call_next))
    assert response.headers["x-lab-zone"] == "us-west-2b"
    assert response.headers["x-lab-group"] == "vllm-us-west-2b-1"
    assert response.headers["content-type"] == "text/event-stream"


def test_no_headers_outside_the_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load(monkeypatch)

    async def call_next(request: object) -> _Response:
        return _Response()

    response = asyncio.run(module.add_lab_headers(_request(), call_next))
    assert set(response.headers) == {"content-type"}


def test_health_passes_through_while_no_fault_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load(monkeypatch, LAB_ZONE="z")
    seen: list[str] = []

    async def call_next(request: SimpleNamespace) -> _Response:
        seen.append(request.url.path)
        return _Response()

    response = asyncio.run(module.add_lab_headers(_request("/health", "GET"), call_next))
    assert seen == ["/health"]
    assert response.headers["x-lab-zone"] == "z"
