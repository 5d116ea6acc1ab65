"""The twin's gateway: HTTPRoute split, header filter, SSE, zone failover, and a clean ``down``.

Real processes on 127.0.0.1: the controller, HAProxy and stand-in engines (same CLI and
endpoints as the simulator). Health-check intervals run at 0.2 x the manifests' 5 s (1 s).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import itertools

from twin_fixtures import ENGINE, STUB_ENGINE, wait_for, write_rendered

from labutils.targets.twin import TwinBackend

WEIGHTS = {"us-west-2a": 70, "us-west-2b": 30, "us-west-2c": 0}
HEADERS = {
    "set": [{"name": "X-Set", "value": "gateway"}],
    "add": [{"name": "X-Add", "value": "added"}],
    "remove": ["X-Remove"],
}
TIME_SCALE = 0.2  # interval 5 s -> 1 s; unhealthy threshold 2


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinBackend]:
    root = tmp_path_factory.mktemp("twin-gw")
    rendered = write_rendered(root / "rendered", WEIGHTS, replicas=2, headers=HEADERS)
    backend = TwinBackend(root / "state", engine=ENGINE, model_load_s=0.3, time_scale=TIME_SCALE)
    try:
        backend.up(rendered, timeout_s=60)
        yield backend
    finally:
        backend.down()


@pytest.fixture(scope="module")
def stub_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinBackend]:
    """One zone of the stand-in engine, which echoes the request headers it received."""
    root = tmp_path_factory.mktemp("twin-hdr")
    rendered = write_rendered(root / "rendered", {"us-west-2a": 1}, headers=HEADERS)
    backend = TwinBackend(root / "state", engine=STUB_ENGINE, model_load_s=0.1)
    try:
        backend.up(rendered, timeout_s=60)
        yield backend
    finally:
        backend.down()


async def _send(
    url: str, count: int, concurrency: int = 16, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            queue.get_nowait()
            start = time.monotonic()
            try:
                async with session.post(
                    url + "/v1/completions",
                    json={"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": 1},
                    headers=headers or {},
                ) as r:
                    body = await r.read()
                    results.append(
                        {
                            "status": r.status,
                            "zone": r.headers.get("x-lab-zone"),
                            "group": r.headers.get("x-lab-group"),
                            "t": start,
                            "seen": r.headers.get("x-lab-seen-headers"),
                            "body": body[:200],
                        }
                    )
            except aiohttp.ClientError as exc:
                results.append({"status": -1, "zone": None, "t": start, "error": str(exc)})

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results


def _wait_out_of_rotation(twin: TwinBackend, server: str, timeout_s: float = 15.0) -> None:
    """Wait until HAProxy's ``show stat`` has ``server`` DOWN in every backend holding it.

    How fast that happens is measured by benchmarks/twin_gateway.py (detection time), not
    asserted here: on a loaded 2-core machine a wall-clock bound is a coin toss.
    """
    from labutils.targets.twin.haproxy import runtime_command, server_stats

    def statuses() -> list[str]:
        text = asyncio.run(runtime_command(twin.state_dir / "haproxy.sock", "show stat"))
        return [row.status for row in server_stats(text) if row.server == server]

    wait_for(
        statuses,
        lambda seen: bool(seen) and all(s.startswith(("DOWN", "MAINT")) for s in seen),
        f"{server} DOWN in every HAProxy backend",
        timeout_s=timeout_s,
    )


def test_zone_split_matches_route_weights(twin: TwinBackend) -> None:
    # Gateway API conformance: 500 requests, 5 percentage points per backend, and the test
    # passes when any of 10 attempts does (each request's zone is an independent draw, so a
    # fair split misses 5 points by chance in ~1.5 % of attempts at 70/30). Weight 0 gets
    # nothing and every request succeeds in *every* attempt.
    shares = []
    for _ in range(10):
        results = asyncio.run(_send(twin.endpoints().gateway_url, 500))
        assert all(r["status"] == 200 for r in results)
        zones = Counter(r["zone"] for r in results)
        assert zones["us-west-2c"] == 0
        shares.append((zones["us-west-2a"], zones["us-west-2b"]))
        if abs(zones["us-west-2a"] - 350) <= 25 and abs(zones["us-west-2b"] - 150) <= 25:
            break
    else:
        pytest.fail(f"no attempt within 5 points of 70/30 over 500 requests: {shares}")
    groups = Counter(r["group"] for r in results)
    assert set(groups) == {
        "vllm-us-west-2a-0",
        "vllm-us-west-2a-1",
        "vllm-us-west-2b-0",
        "vllm-us-west-2b-1",
    }


def test_measure_split_retries_a_miss_and_reports_every_attempt(twin: TwinBackend) -> None:
    from labutils.errors import ValidationError
    from labutils.lessons import n02_routing as routing

    # 99 requests can never land within 0.1 point of 70 %: every attempt misses
    split = routing.measure_split(twin, requests=99, rate_rps=500, attempts=3, tolerance=0.001)
    assert split.attempt == 3 and len(split.missed) == 2
    assert [int(f["requests"].sum()) for f in split.missed] == [99, 99]
    assert split.weights == WEIGHTS
    with pytest.raises(ValidationError, match="attempt 3; every earlier one missed"):
        routing.check_split(split)
    fair = routing.measure_split(twin, requests=500, rate_rps=500)
    frame = routing.check_split(fair)
    assert frame.set_index("zone").loc["us-west-2c", "requests"] == 0
    assert int(frame["requests"].sum()) == 500 and fair.attempt == len(fair.missed) + 1


def test_header_filter_set_add_remove_case_insensitive(stub_twin: TwinBackend) -> None:
    twin = stub_twin
    sent = {"x-set": "client", "x-add": "client", "x-remove": "secret", "X-Keep": "k"}
    (result,) = asyncio.run(_send(twin.endpoints().gateway_url, 1, 1, headers=sent))
    seen = {k.lower(): v for k, v in json.loads(result["seen"]).items()}
    assert seen["x-set"] == "gateway"  # set overwrites (name matched case-insensitively)
    assert seen["x-add"] == "client,added"  # add appends as one comma-joined value
    assert "x-remove" not in seen
    assert seen["x-keep"] == "k"
    (bare,) = asyncio.run(_send(twin.endpoints().gateway_url, 1, 1))
    seen = {k.lower(): v for k, v in json.loads(bare["seen"]).items()}
    assert seen["x-add"] == "added" and seen["x-set"] == "gateway"


def test_paths_outside_the_route_get_404(twin: TwinBackend) -> None:
    async def get() -> int:
        async with (
            aiohttp.ClientSession() as s,
            s.get(twin.endpoints().gateway_url + "/admin") as r,
        ):
            return r.status

    assert asyncio.run(get()) == 404


async def _stream_gaps(url: str, tokens: int) -> list[float]:
    arrivals = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url + "/v1/completions", json={"prompt": "x", "max_tokens": tokens, "stream": True}
        ) as r,
    ):
        async for line in r.content:
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic())
    return [b - a for a, b in itertools.pairwise(arrivals)]


def test_sse_streams_through_gateway_event_by_event(stub_twin: TwinBackend) -> None:
    # The stub writes one event every 5 ms; buffered delivery would bunch them (gaps ~0).
    gaps = asyncio.run(_stream_gaps(stub_twin.endpoints().gateway_url, 40))
    assert len(gaps) == 39
    bunched = sum(1 for g in gaps if g < 0.001)
    assert bunched <= len(gaps) // 3, f"events arrived in bursts: {gaps}"


def test_zone_kill_fails_over_and_restore_brings_it_back(twin: TwinBackend) -> None:
    url = twin.endpoints().gateway_url
    before = asyncio.run(_send(url, 40, concurrency=4))
    assert all(r["status"] == 200 for r in before)
    twin.fail(zone="us-west-2a", mode="kill")
    # Requests sent before the health checks notice can fail; once HAProxy has every server of
    # the zone (both groups) DOWN (the observable state), every request must succeed elsewhere.
    for group in ("vllm-us-west-2a-0", "vllm-us-west-2a-1"):
        _wait_out_of_rotation(twin, group)
    after = asyncio.run(_send(url, 80, concurrency=4))
    assert all(r["status"] == 200 for r in after), Counter(r["status"] for r in after)
    assert {r["zone"] for r in after} == {"us-west-2b"}
    twin.restore(zone="us-west-2a")
    wait_for(
        lambda: Counter(r["zone"] for r in asyncio.run(_send(url, 40, concurrency=4))),
        lambda zones: zones["us-west-2a"] > 0,
        "the restored zone to receive traffic again",
    )
    events = twin.events()
    assert {"fault", "restore", "group-recreated"} <= set(events["kind"])


def test_weighted_strict_gives_the_dead_zone_share_503(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1, "us-west-2b": 1})
    twin = TwinBackend(
        tmp_path / "state",
        engine=ENGINE,
        model_load_s=0.2,
        strategy="weighted-strict",
        time_scale=TIME_SCALE,
    )
    try:
        twin.up(rendered, timeout_s=60)
        twin.fail(zone="us-west-2a", mode="kill")
        _wait_out_of_rotation(twin, "vllm-us-west-2a-0")
        results = asyncio.run(_send(twin.endpoints().gateway_url, 200))
    finally:
        twin.down()
    statuses = Counter(r["status"] for r in results)
    # weights are a split, not failover: about half the requests get 503
    assert 0.35 <= statuses[503] / 200 <= 0.65, statuses
    assert statuses[200] + statuses[503] == 200


def test_twin_backend_is_a_backend(tmp_path: Path) -> None:
    from labutils.protocol import Backend
    from labutils.targets import get_backend

    backend = get_backend("local", state_dir=tmp_path)
    assert isinstance(backend, Backend) and backend.target == "local"


def test_unhealthy_group_leaves_rotation_and_exporter_shows_it(twin: TwinBackend) -> None:
    twin.restore(zone="us-west-2a")  # independent of the test order
    twin.wait_ready(30)
    twin.fail(group="vllm-us-west-2b-0", mode="unhealthy")
    try:
        _wait_out_of_rotation(twin, "vllm-us-west-2b-0")
        results = asyncio.run(_send(twin.endpoints().gateway_url, 100))
        assert all(r["status"] == 200 for r in results)
        groups = Counter(r["group"] for r in results)
        assert groups["vllm-us-west-2b-0"] == 0 and groups["vllm-us-west-2b-1"] > 0

        async def scrape() -> str:
            async with aiohttp.ClientSession() as s, s.get(twin.stats_url) as r:
                return await r.text()

        text = asyncio.run(scrape())
        down = [
            line
            for line in text.splitlines()
            if line.startswith("haproxy_server_status")
            and 'proxy="zone_us-west-2b"' in line
            and 'server="vllm-us-west-2b-0"' in line
            and 'state="DOWN"' in line
        ]
        assert down and down[0].endswith(" 1"), down
    finally:
        twin.restore(group="vllm-us-west-2b-0")
