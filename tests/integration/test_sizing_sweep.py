"""Sizing sweep against real simulated engines on 127.0.0.1 (short, bounded load steps)."""

from __future__ import annotations

import asyncio

import aiohttp
import pandas as pd
import pytest

from labutils import sizing
from labutils.cli import main
from labutils.errors import ConfigError, WaitTimeout

pytest.importorskip("labutils.loadtest", reason="the load tester (branch loadtest) is not merged")


def _two_layouts() -> pd.DataFrame:
    frame = sizing.candidates(
        "llama-3.1-8b", instance_types=["g6.xlarge", "p5e.48xlarge"], max_nodes=1
    )
    picked = frame[frame["tensor_parallel_size"] == 1].reset_index(drop=True)
    picked.attrs.update(frame.attrs)
    return picked


def test_sweep_measures_faster_gpu_as_faster_and_stops_its_engines() -> None:
    settings = sizing.SweepSettings(
        concurrencies=(1, 6), duration_s=1.0, input_tokens=64, output_tokens=12
    )
    urls: list[str] = []

    async def recording_measure(
        url: str, model: str, users: int, s: sizing.SweepSettings
    ) -> sizing.Measurement:
        urls.append(url)
        from labutils.sizing import _measure_with_loadtest

        return await _measure_with_loadtest(url, model, users, s)

    frame = sizing.sweep(_two_layouts(), settings, measure=recording_measure, progress=False)
    assert len(frame) == 4 and len(urls) == 4
    assert (frame["failed"] == 0).all() and (frame["completed"] > 0).all()
    by = frame.set_index(["layout", "concurrency"])
    l4, h200 = by.loc["g6.xlarge TP1 PP1"], by.loc["p5e.48xlarge TP1 PP1"]
    # H200 reads the weights ~16x faster than L4: the measured TPOT must show it.
    assert h200.loc[1, "tpot_p50_ms"] < l4.loc[1, "tpot_p50_ms"] / 3
    # Batching raises the engine's throughput.
    assert l4.loc[6, "output_tokens_per_s"] > 2 * l4.loc[1, "output_tokens_per_s"]
    # The measured single-user TPOT stays near the roofline the simulator is built on.
    ratio = frame["tpot_p50_ms"] / frame["roofline_tpot_ms"]
    assert ((ratio > 0.7) & (ratio < 2.0))[frame["concurrency"] == 1].all()
    # Cost per Mtok is the node price over tokens per hour of all the node's engines.
    row = frame.iloc[0]
    tokens_per_hour = row["output_tokens_per_s"] * row["engines"] * 3600
    assert row["usd_per_mtok"] == pytest.approx(row["usd_per_hour"] / tokens_per_hour * 1e6)
    assert frame.attrs["simulated"] is True
    rec = sizing.recommend(frame, sizing.LatencySlo(tpot_p50_ms=50, ttft_p95_ms=2000))
    assert rec.layout in set(frame["layout"])

    async def refused(url: str) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as r:
                return r.status >= 500
        except aiohttp.ClientConnectionError:
            return True

    assert all(asyncio.run(refused(url)) for url in set(urls))


def test_sweep_refuses_rejected_layouts() -> None:
    frame = sizing.candidates("llama-3.1-70b", instance_types=["g5.xlarge"], max_nodes=1)
    with pytest.raises(ConfigError, match=r"g5\.xlarge TP1 PP1 was rejected: .*does not fit"):
        sizing.sweep(frame, progress=False)


def test_a_hung_load_step_times_out_naming_the_engine() -> None:
    settings = sizing.SweepSettings(concurrencies=(1,), duration_s=0.1, request_timeout_s=0.1)

    async def hung(url: str, model: str, users: int, s: sizing.SweepSettings) -> sizing.Measurement:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    layouts = _two_layouts().head(1)
    layouts.attrs.update(_two_layouts().attrs)
    with pytest.raises(WaitTimeout, match=r"c=1 on http://127\.0\.0\.1:\d+ still running.*0/1"):
        sizing.sweep(layouts, settings, measure=hung, progress=False)


def test_cli_sweep_prints_measurements_and_the_recommendation(capsys) -> None:
    argv = ["sizing", "sweep", "llama-3.1-8b", "--layouts", "p5e.48xlarge TP1 PP1",
            "--concurrencies", "1,4", "--duration-s", "0.5", "--output-tokens", "8",
            "--input-tokens", "32"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "simulated engines" in out
    assert "- p5e.48xlarge TP1 PP1 at concurrency" in out
    assert main([*argv[:3], "--layouts", "p9.huge TP1 PP1"]) == 2
    assert "unknown ['p9.huge TP1 PP1']" in capsys.readouterr().err
