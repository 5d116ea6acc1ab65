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


SLO = sizing.LatencySlo(tpot_p50_ms=50, ttft_p95_ms=500)


def _two_layouts() -> pd.DataFrame:
    frame = sizing.candidates(
        "llama-3.1-8b", instance_types=["g6e.xlarge", "p5en.48xlarge"], max_nodes=1, slo=SLO
    )
    picked = frame[frame["tensor_parallel_size"] == 1].reset_index(drop=True)
    picked.attrs.update(frame.attrs)
    return picked


def test_sweep_loads_each_engine_to_its_knee_and_stops_its_engines() -> None:
    # a light step and one at twice the roofline knee rate, which must miss the TPOT target
    settings = sizing.SweepSettings(load_fractions=(0.3, 2.0), duration_s=1.5, warmup_s=0.4)
    urls: list[str] = []

    async def recording_measure(
        url: str, model: str, rate: float, s: sizing.SweepSettings
    ) -> sizing.Measurement:
        urls.append(url)
        from labutils.sizing import _measure_open_loop

        return await _measure_open_loop(url, model, rate, s)

    layouts = _two_layouts()
    frame = sizing.sweep(layouts, settings, slo=SLO, measure=recording_measure, progress=False)
    assert len(frame) == 4 and len(urls) == 4
    assert (frame["failed"] == 0).all() and (frame["completed"] > 0).all()
    assert (frame["requests"] == frame["completed"]).all()
    by = frame.set_index(["layout", "load_fraction"])
    l40s, h200 = by.loc["g6e.xlarge TP1 PP1"], by.loc["p5en.48xlarge TP1 PP1"]
    # The step rates are the fractions of each layout's own roofline knee rate.
    knee = layouts.set_index("layout")["roofline_knee_rps"]
    assert l40s.loc[0.3, "rate_rps"] == pytest.approx(0.3 * knee["g6e.xlarge TP1 PP1"])
    # H200 reads the weights ~4x faster than L40S: at light load its TPOT shows it.
    assert h200.loc[0.3, "tpot_p50_ms"] < l40s.loc[0.3, "tpot_p50_ms"] / 2
    # Light load: the engine delivers what the step's requests asked for (its own counter).
    assert 0.7 < l40s.loc[0.3, "delivered_share"] < 1.3
    # Twice the knee rate misses the SLO: L40S's batch grows until TPOT breaks; H200's knee is
    # max_num_seqs (roofline), past which requests queue and TTFT breaks.
    assert l40s.loc[2.0, "tpot_p50_ms"] > SLO.tpot_p50_ms
    assert SLO.misses(h200.loc[2.0]) and h200.loc[2.0, "requests_waiting_mean"] > 10
    for part in (l40s, h200):
        assert part.loc[2.0, "tokens_per_s_per_gpu"] > part.loc[0.3, "tokens_per_s_per_gpu"]
    # The engines ran in their own processes and kept time on this machine at the light load.
    assert frame["sim_timing_error"].notna().all()
    # Cost per Mtok is the node price over tokens per hour of all the node's engines.
    row = frame.iloc[0]
    tokens_per_hour = row["output_tokens_per_s"] * row["engines"] * 3600
    assert row["usd_per_mtok"] == pytest.approx(row["usd_per_hour"] / tokens_per_hour * 1e6)
    assert frame.attrs["simulated"] is True
    rec = sizing.recommend(frame, SLO)
    assert rec.layout in set(frame["layout"])
    assert sizing.check_recommendation(frame, rec, SLO)["holds"].all()

    async def refused(url: str) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as r:
                return r.status >= 500
        except aiohttp.ClientConnectionError:
            return True

    assert all(asyncio.run(refused(url)) for url in set(urls))


def test_sweep_refuses_rejected_layouts_and_a_different_request_shape() -> None:
    frame = sizing.candidates("llama-3.1-70b", instance_types=["g5.xlarge"], max_nodes=1)
    with pytest.raises(ConfigError, match=r"g5\.xlarge TP1 PP1 was rejected: .*does not fit"):
        sizing.sweep(frame, progress=False)
    with pytest.raises(ConfigError, match="predicted for 128 in / 16 out"):
        sizing.sweep(_two_layouts(), sizing.SweepSettings(input_tokens=256), progress=False)


def test_a_hung_load_step_times_out_naming_the_engine() -> None:
    settings = sizing.SweepSettings(
        load_fractions=(0.5,), duration_s=0.1, warmup_s=0.0, request_timeout_s=0.1
    )

    async def hung(
        url: str, model: str, rate: float, s: sizing.SweepSettings
    ) -> sizing.Measurement:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    layouts = _two_layouts().head(1)
    layouts.attrs.update(_two_layouts().attrs)
    with pytest.raises(
        WaitTimeout, match=r"step [\d.]+ req/s on http://127\.0\.0\.1:\d+ still running.*0/1"
    ):
        sizing.sweep(layouts, settings, measure=hung, progress=False)


def test_cli_sweep_prints_measurements_and_the_recommendation(capsys) -> None:
    argv = ["sizing", "sweep", "llama-3.1-8b", "--layouts", "p5en.48xlarge TP1 PP1",
            "--load-fractions", "0.2,3", "--duration-s", "0.8", "--warmup-s", "0.2",
            "--output-tokens", "8", "--input-tokens", "32"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "simulated engines" in out and "requests = n behind each percentile" in out
    assert "- p5en.48xlarge TP1 PP1 at " in out and "requests/s" in out
    assert main([*argv[:3], "--layouts", "p9.huge TP1 PP1"]) == 2
    assert "unknown ['p9.huge TP1 PP1']" in capsys.readouterr().err
