"""The twin from the project's own manifests (`labctl render` output): 3 zones x 2 groups of
the simulator start in under 30 s and serve through the gateway; `down` leaves nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from labutils.manifests import render
from labutils.targets.twin import TwinBackend, load_twin_spec


def test_three_zones_by_two_groups_start_under_30s(tmp_path: Path) -> None:
    twin = TwinBackend(tmp_path / "state")  # the real simulator, default 2 s model load
    start = time.monotonic()
    try:
        status = twin.up(timeout_s=60)  # no folder: renders manifests/ into the state dir
        start_s = time.monotonic() - start
        spec = load_twin_spec(tmp_path / "state" / "rendered")
        assert len(spec.zones) == 3 and all(z.replicas == 2 for z in spec.zones)
        assert list(status["ready_replicas"]) == [2, 2, 2]
        assert start_s < 30.0, f"3x2 twin took {start_s:.1f} s to start"
        ends = twin.endpoints()

        async def one() -> tuple[int, str | None, str | None]:
            body = {"model": ends.model, "prompt": "hello", "max_tokens": 2}
            async with (
                aiohttp.ClientSession() as s,
                s.post(ends.gateway_url + "/v1/completions", json=body) as r,
            ):
                await r.read()
                return r.status, r.headers.get("x-lab-zone"), r.headers.get("x-lab-group")

        status_code, zone, group = asyncio.run(one())
        assert status_code == 200
        assert zone in {z.zone for z in spec.zones} and group and group.startswith(f"vllm-{zone}")
        assert len(twin.groups()) == 3 * 2 * spec.zones[0].size  # leaders + workers
    finally:
        twin.down()
    assert twin.leftovers() == {"pids": [], "ports": []}


def test_explicit_render_folder(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    render(out_dir=rendered)
    spec = load_twin_spec(rendered)
    hpa = spec.hpa_for(spec.zones[0].lws)
    assert hpa is not None and hpa.metrics[0].name == "vllm_num_requests_waiting"
    assert spec.series_for(hpa.metrics[0].name) == "vllm:num_requests_waiting"
