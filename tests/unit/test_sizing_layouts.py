"""Sizing: candidate layouts, roofline columns, shortlist, recommendation, plots, CLI."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import pandas as pd
import pytest

from labutils import figures, sizing
from labutils.catalog import INSTANCE_TYPES, load_prices
from labutils.cli import main
from labutils.errors import ConfigError, LoadTestError, ValidationError

matplotlib.use("Agg")


def test_70b_rejects_layouts_that_do_not_fit_and_says_why() -> None:
    frame = sizing.candidates("llama-3.1-70b").set_index("layout")
    refused = frame.loc["g5.xlarge TP1 PP1"]
    assert not refused["accepted"]
    assert "does not fit" in refused["reason"] and "a10g" in refused["reason"]
    # 141 GB of BF16 weights need more than one 80 GiB GPU, even an H200 at TP1.
    assert not frame.loc["p5e.48xlarge TP1 PP1", "accepted"]
    assert frame.loc["p5e.48xlarge TP2 PP1", "accepted"]
    # Splitting across two nodes makes the 4 x A10G node fit where one node does not.
    assert not frame.loc["g5.12xlarge TP4 PP1", "accepted"]
    assert frame.loc["g5.12xlarge TP4 PP2", "accepted"]
    assert (frame.loc[frame["accepted"], "reason"] == "").all()
    assert (frame.loc[~frame["accepted"], "reason"] != "").all()


def test_long_context_rejection_comes_from_the_kv_cache_check() -> None:
    frame = sizing.candidates("llama-3.1-8b", max_model_len=131072).set_index("layout")
    row = frame.loc["g5.xlarge TP1 PP1"]
    assert not row["accepted"]
    assert "max seq len" in row["reason"] and "--max-model-len" in row["reason"]
    assert frame.loc["p5e.48xlarge TP8 PP1", "accepted"]


def test_every_layout_fills_its_nodes_and_is_priced_from_the_data_file() -> None:
    frame = sizing.candidates("llama-3.1-8b", max_nodes=2)
    prices = load_prices()["usd_per_hour"]
    assert isinstance(prices, dict)
    expected_rows = sum(
        len([d for d in range(1, i.gpus + 1) if i.gpus % d == 0]) + 1
        for i in INSTANCE_TYPES.values()
    )
    assert len(frame) == expected_rows
    assert (
        frame["engines"] * frame["tensor_parallel_size"] * frame["pipeline_parallel_size"]
        == frame["gpus"]
    ).all()
    for _, row in frame[frame["accepted"]].iterrows():
        assert row["usd_per_hour"] == pytest.approx(prices[row["instance_type"]] * row["nodes"])
    by = frame.set_index("layout")
    # Same GPU, same engine: the pricier instance costs more per token by the price ratio.
    ratio = (
        by.loc["g5.2xlarge TP1 PP1", "roofline_usd_per_mtok"]
        / by.loc["g5.xlarge TP1 PP1", "roofline_usd_per_mtok"]
    )
    assert ratio == pytest.approx(prices["g5.2xlarge"] / prices["g5.xlarge"])
    # PP adds nodes but (no micro-batch overlap in the model) no per-token speed.
    assert (
        by.loc["g5.xlarge TP1 PP2", "roofline_usd_per_mtok"]
        > 1.9 * by.loc["g5.xlarge TP1 PP1", "roofline_usd_per_mtok"]
    )
    assert frame.attrs["prices_as_of"] == load_prices()["as_of"]


def test_unknown_instance_type_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown instance type 'g9\.huge'.*g5\.xlarge"):
        sizing.candidates("llama-3.1-8b", instance_types=["g9.huge"])


def test_roofline_throughput_and_tpot_grow_with_concurrency() -> None:
    frame = sizing.candidates("llama-3.1-8b", instance_types=["g6e.xlarge"], max_nodes=1)
    assert len(frame) == 1
    low = sizing.candidates(
        "llama-3.1-8b", instance_types=["g6e.xlarge"], max_nodes=1, concurrency=1
    ).iloc[0]
    high = sizing.candidates(
        "llama-3.1-8b", instance_types=["g6e.xlarge"], max_nodes=1, concurrency=64
    ).iloc[0]
    assert high["roofline_output_tokens_per_s"] > 10 * low["roofline_output_tokens_per_s"]
    assert high["roofline_tpot_ms"] > low["roofline_tpot_ms"]
    assert high["roofline_usd_per_mtok"] < low["roofline_usd_per_mtok"] / 10
    assert low["roofline_ttft_ms"] == pytest.approx(high["roofline_ttft_ms"])


def test_shortlist_spreads_over_gpus_cheapest_first() -> None:
    frame = sizing.candidates("llama-3.1-8b")
    short = sizing.shortlist(frame, per_gpu=1, limit=5)
    assert len(short) == 5
    assert short["gpu"].is_unique
    assert short["roofline_usd_per_mtok"].is_monotonic_increasing
    cheapest = frame[frame["accepted"]]["roofline_usd_per_mtok"].min()
    assert short.iloc[0]["roofline_usd_per_mtok"] == cheapest
    assert short.attrs["model"] == frame.attrs["model"]


def test_shortlist_of_nothing_accepted_raises() -> None:
    frame = sizing.candidates("llama-3.1-70b", instance_types=["g5.xlarge"], max_nodes=1)
    with pytest.raises(ConfigError, match="no layout"):
        sizing.shortlist(frame)


def test_sweep_settings_refuse_unbounded_or_empty_load() -> None:
    with pytest.raises(LoadTestError):
        sizing.SweepSettings(concurrencies=())
    with pytest.raises(LoadTestError):
        sizing.SweepSettings(duration_s=0)


def _point(layout: str, concurrency: int, usd: float, tpot: float, ttft: float, failed: int = 0):
    return {
        "layout": layout,
        "gpu": "l4",
        "concurrency": concurrency,
        "nodes": 1,
        "gpus": 1,
        "engines": 1,
        "usd_per_hour": 1.0,
        "requests": 10,
        "completed": 10 - failed,
        "failed": failed,
        "output_tokens_per_s": 100.0,
        "roofline_output_tokens_per_s": 125.0,
        "measured_over_roofline": 0.8,
        "tokens_per_s_per_gpu": 100.0,
        "usd_per_mtok": usd,
        "tpot_p50_ms": tpot,
        "ttft_p95_ms": ttft,
    }


def _frame(points: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(points)
    frame.attrs.update(model="m", prices_as_of="2026-11-01")
    return frame


def test_recommend_picks_cheapest_meeting_slo_and_explains_cheaper_misses() -> None:
    frame = _frame(
        [
            _point("slow", 32, usd=0.5, tpot=80.0, ttft=500.0),
            _point("slow", 1, usd=5.0, tpot=60.0, ttft=100.0),
            _point("fast", 1, usd=4.0, tpot=10.0, ttft=50.0),
            _point("fast", 32, usd=1.5, tpot=40.0, ttft=2500.0),
            _point("fast", 8, usd=2.0, tpot=20.0, ttft=300.0),
            _point("mid", 8, usd=3.0, tpot=30.0, ttft=100.0),
            _point("flaky", 8, usd=1.0, tpot=30.0, ttft=100.0, failed=2),
        ]
    )
    rec = sizing.recommend(frame, sizing.LatencySlo(tpot_p50_ms=50, ttft_p95_ms=2000))
    assert (rec.layout, rec.concurrency, rec.usd_per_mtok) == ("fast", 8, 2.0)
    text = " ".join(rec.reasons)
    assert "$2.000" in text and "TPOT p50 20.0 ms" in text and "2026-11-01" in text
    assert "mid" in text and "1.5x" in text
    assert "slow never met the SLO" in text and "TPOT p50 80.0 ms > 50 ms" in text
    assert "(concurrency 32) it would be cheaper $0.500" in text
    assert "flaky never met" in text and "2 of 10 requests failed" in text
    assert "Loading fast harder (concurrency 32)" in text and "TTFT p95 2500 ms > 2000" in text
    best = rec.to_frame()
    assert list(best["layout"][best["meets_slo"]]) == ["fast", "mid"]


def test_recommend_without_any_passing_point_names_the_closest() -> None:
    frame = _frame([_point("slow", 1, usd=1.0, tpot=90.0, ttft=100.0)])
    with pytest.raises(ConfigError, match=r"closest slow \(TPOT p50 90.0 ms > 50 ms\)"):
        sizing.recommend(frame)


def test_recommend_treats_nan_latency_as_a_miss() -> None:
    frame = _frame(
        [
            _point("broken", 1, usd=0.1, tpot=math.nan, ttft=math.nan),
            _point("ok", 1, usd=2.0, tpot=10.0, ttft=10.0),
        ]
    )
    assert sizing.recommend(frame).layout == "ok"


def test_plots_draw_one_bar_per_layout_and_one_point_per_step() -> None:
    frame = _frame(
        [
            _point("a", 1, usd=3.0, tpot=10.0, ttft=10.0),
            _point("a", 8, usd=1.0, tpot=20.0, ttft=10.0),
            _point("b", 1, usd=4.0, tpot=70.0, ttft=10.0),
        ]
    )
    rec = sizing.recommend(frame)
    bars = figures.plot_cost_bars(rec.to_frame())
    assert [p.get_height() for p in bars.axes[0].patches] == [1.0, 4.0]
    assert "SIMULATED l4 engines serving m" in bars.axes[0].get_title()
    scatter = figures.plot_cost_vs_throughput(frame)
    offsets = [c.get_offsets() for c in scatter.axes[0].collections]
    assert sum(len(o) for o in offsets) == 3


def test_cli_candidates_lists_rejections_and_bad_model_is_one_line(capsys) -> None:
    assert main(["sizing", "candidates", "llama-3.1-70b", "--all", "--max-nodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "g5.xlarge TP1 PP1" in out and "does not fit" in out
    assert main(["sizing", "candidates", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model" in err


def test_check_recommendation_passes_the_real_pick_and_catches_a_wrong_one() -> None:
    a_low = _point("a", 1, usd=3.0, tpot=10.0, ttft=10.0)
    a_high = {**_point("a", 8, usd=1.0, tpot=20.0, ttft=10.0), "tokens_per_s_per_gpu": 300.0}
    b_low = _point("b", 1, usd=4.0, tpot=10.0, ttft=10.0)
    b_high = {**_point("b", 8, usd=2.0, tpot=30.0, ttft=10.0), "tokens_per_s_per_gpu": 200.0}
    frame = _frame([a_low, a_high, b_low, b_high])
    rec = sizing.recommend(frame)
    table = sizing.check_recommendation(frame, rec)
    assert table["holds"].all() and len(table) == 4
    wrong = dataclasses.replace(rec, layout="b", concurrency=8)
    with pytest.raises(ValidationError, match="no SLO-meeting point is cheaper") as info:
        sizing.check_recommendation(frame, wrong)
    assert len(info.value.problems) == 1
    flat = _frame([a_low, a_high, b_low, {**b_high, "tokens_per_s_per_gpu": 50.0}])
    with pytest.raises(ValidationError, match="b: batching raises"):
        sizing.check_recommendation(flat, sizing.recommend(flat))
