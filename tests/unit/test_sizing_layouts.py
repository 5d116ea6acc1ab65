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
    assert not frame.loc["p5en.48xlarge TP1 PP1", "accepted"]
    assert "does not fit" in frame.loc["p5en.48xlarge TP1 PP1", "reason"]
    assert frame.loc["p5en.48xlarge TP2 PP1", "accepted"]
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
    assert frame.loc["p5en.48xlarge TP8 PP1", "accepted"]


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
    # A type without an on-demand price is refused with the file's note, not priced at 0.
    unpriced = frame[frame["instance_type"].map(lambda t: prices.get(t) is None)]
    assert not unpriced.empty and not unpriced["accepted"].any()
    assert unpriced["reason"].str.contains("no on-demand price").all()
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


def test_shortlist_spreads_over_gpus_cheapest_at_the_knee_first() -> None:
    frame = sizing.candidates("llama-3.1-8b")
    short = sizing.shortlist(frame, per_gpu=1, limit=5)
    assert len(short) == 5
    assert short["gpu"].is_unique
    assert short["roofline_knee_usd_per_mtok"].is_monotonic_increasing
    cheapest = frame[frame["accepted"]]["roofline_knee_usd_per_mtok"].min()
    assert short.iloc[0]["roofline_knee_usd_per_mtok"] == cheapest
    assert short["roofline_meets_slo"].all()
    assert short.attrs["model"] == frame.attrs["model"]
    # One L4 reads 15 GB of weights per step at ~227 GB/s: > 50 ms at batch 1, never shortlisted
    # (TP4 splits the reads over four L4s and meets the target).
    l4 = frame.set_index("layout").loc["g6.xlarge TP1 PP1"]
    assert not l4["roofline_meets_slo"] and l4["roofline_knee_limit"] == "TPOT at batch 1"
    wide = sizing.shortlist(frame, per_gpu=20, limit=100)
    assert "g6.xlarge TP1 PP1" not in set(wide["layout"]) and wide["roofline_meets_slo"].all()
    loose = sizing.shortlist(frame, per_gpu=20, limit=100, meeting_slo_only=False)
    assert "g6.xlarge TP1 PP1" in set(loose["layout"])


def test_roofline_knee_is_the_last_batch_meeting_the_tpot_target() -> None:
    from labutils.sim.perf import plan_memory

    cfg = sizing._engine_config("llama-3.1-8b", "l40s", 1, 1, 4096, 256)
    kv_tokens = plan_memory(cfg).kv_cache_tokens
    knee = sizing.roofline_knee(cfg, 50.0, 128, 16, kv_tokens)
    c = knee["roofline_knee_concurrency"]
    assert knee["roofline_meets_slo"] and knee["roofline_knee_limit"] == "TPOT SLO"
    assert sizing.roofline(cfg, c, 128, 16)["roofline_tpot_ms"] <= 50.0
    assert sizing.roofline(cfg, c + 1, 128, 16)["roofline_tpot_ms"] > 50.0
    # c steady users emit c tokens per step; a request ends every 16 steps per user.
    tpot_s = knee["roofline_knee_tpot_ms"] / 1e3
    assert knee["roofline_knee_rps"] == pytest.approx(c / tpot_s / 16)
    # A looser target is bounded by max_num_seqs, a tiny KV cache by the sequences it holds.
    assert sizing.roofline_knee(cfg, 1e6, 128, 16, kv_tokens)["roofline_knee_limit"] == (
        "max_num_seqs"
    )
    small = sizing.roofline_knee(cfg, 1e6, 128, 16, kv_cache_tokens=10 * 144)
    assert small["roofline_knee_concurrency"] == 10 and small["roofline_knee_limit"] == "KV cache"


def test_fp8_70b_halves_the_body_weights_and_fits_where_bf16_does_not() -> None:
    from labutils.catalog import model

    bf16, fp8 = model("llama-3.1-70b"), model("llama-3.1-70b-fp8")
    assert fp8.body_params == bf16.body_params
    # linear layers at 1 byte, embedding and lm_head still BF16
    assert fp8.weight_bytes == pytest.approx(bf16.body_params + 2 * bf16.embedding_params * 2)
    assert fp8.weight_bytes < 0.52 * bf16.weight_bytes
    both = pd.concat(
        [
            sizing.candidates(m, instance_types=["g6e.12xlarge"], max_nodes=1).assign(model=m)
            for m in ("llama-3.1-70b", "llama-3.1-70b-fp8")
        ]
    ).set_index(["model", "layout"])
    assert not both.loc[("llama-3.1-70b", "g6e.12xlarge TP2 PP1"), "accepted"]
    assert both.loc[("llama-3.1-70b-fp8", "g6e.12xlarge TP2 PP1"), "accepted"]
    tp4 = "g6e.12xlarge TP4 PP1"
    # half the bytes per decode step: a faster step and more KV cache at the same layout
    assert (
        both.loc[("llama-3.1-70b-fp8", tp4), "roofline_tpot_ms"]
        < 0.75 * both.loc[("llama-3.1-70b", tp4), "roofline_tpot_ms"]
    )
    assert (
        both.loc[("llama-3.1-70b-fp8", tp4), "kv_cache_tokens"]
        > 2 * both.loc[("llama-3.1-70b", tp4), "kv_cache_tokens"]
    )


def test_usd_per_mtok_is_price_over_tokens_per_hour() -> None:
    assert sizing.usd_per_mtok(3.6, 1000.0) == pytest.approx(1.0)
    assert math.isnan(sizing.usd_per_mtok(3.6, 0.0))
    series = sizing.usd_per_mtok(pd.Series([3.6, 3.6]), pd.Series([1000.0, 0.0]))
    assert series.iloc[0] == pytest.approx(1.0) and math.isnan(series.iloc[1])


def test_shortlist_of_nothing_accepted_raises() -> None:
    frame = sizing.candidates("llama-3.1-70b", instance_types=["g5.xlarge"], max_nodes=1)
    with pytest.raises(ConfigError, match="no layout"):
        sizing.shortlist(frame)


def test_sweep_settings_refuse_unbounded_or_empty_load() -> None:
    with pytest.raises(LoadTestError):
        sizing.SweepSettings(load_fractions=())
    with pytest.raises(LoadTestError, match="rising"):
        sizing.SweepSettings(load_fractions=(1.0, 0.5))
    with pytest.raises(LoadTestError):
        sizing.SweepSettings(duration_s=0)
    with pytest.raises(LoadTestError, match="warmup_s"):
        sizing.SweepSettings(duration_s=2, warmup_s=2)


def _point(layout: str, rate: float, usd: float, tpot: float, ttft: float, failed: int = 0):
    return {
        "layout": layout,
        "gpu": "l4",
        "rate_rps": rate,
        "load_fraction": rate / 10,
        "roofline_knee_rps": 10.0,
        "nodes": 1,
        "gpus": 1,
        "engines": 1,
        "usd_per_hour": 1.0,
        "requests": 10,
        "completed": 10 - failed,
        "failed": failed,
        "output_tokens_per_s": 100.0,
        "tokens_per_s_per_gpu": 100.0,
        "usd_per_mtok": usd,
        "tpot_p50_ms": tpot,
        "ttft_p95_ms": ttft,
    }


def _frame(points: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(points)
    frame.attrs.update(model="m", prices_as_of="2026-11-01")
    return frame


def test_recommend_ranks_each_layouts_knee_and_explains_the_step_above() -> None:
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
    assert (rec.layout, rec.rate_rps, rec.usd_per_mtok) == ("fast", 8, 2.0)
    text = " ".join(rec.reasons)
    assert "$2.000" in text and "TPOT p50 20.0 ms" in text and "2026-11-01" in text
    assert "(n = 10 requests)" in text and "80% of its roofline knee rate" in text
    assert "mid" in text and "1.5x" in text
    assert "slow never met the SLO" in text and "TPOT p50 60.0 ms > 50 ms" in text
    assert "flaky never met" in text and "2 of 10 requests failed" in text
    assert "Loading fast harder (32.0 requests/s)" in text and "TTFT p95 2500 ms > 2000" in text
    best = rec.to_frame()
    assert list(best["layout"][best["meets_slo"]]) == ["fast", "mid"]
    fast = best.set_index("layout").loc["fast"]
    assert fast["next_rate_rps"] == 32 and "TTFT p95 2500 ms" in fast["next_misses"]


def test_knee_is_the_highest_load_meeting_the_slo_not_the_cheapest_point() -> None:
    # a noisy step: the middle load happens to be cheaper, but the highest passing load is 30
    frame = _frame(
        [
            _point("a", 10, usd=3.0, tpot=10.0, ttft=10.0),
            _point("a", 20, usd=1.0, tpot=20.0, ttft=10.0),
            _point("a", 30, usd=1.2, tpot=30.0, ttft=10.0),
            _point("a", 40, usd=0.9, tpot=60.0, ttft=10.0),
        ]
    )
    knee = sizing.knee_points(frame).iloc[0]
    assert knee["rate_rps"] == 30 and knee["meets_slo"]
    assert knee["next_rate_rps"] == 40 and "TPOT p50 60.0 ms" in knee["next_misses"]


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


def test_tpot_plot_draws_each_step_and_the_slo_line_with_misses_hollow() -> None:
    frame = _frame(
        [
            {**_point("a", 1, usd=3.0, tpot=10.0, ttft=10.0), "tokens_per_s_per_gpu": 50.0},
            {**_point("a", 8, usd=1.0, tpot=45.0, ttft=10.0), "tokens_per_s_per_gpu": 300.0},
            {**_point("a", 12, usd=0.9, tpot=62.0, ttft=10.0), "tokens_per_s_per_gpu": 340.0},
            {**_point("b", 1, usd=4.0, tpot=70.0, ttft=10.0), "tokens_per_s_per_gpu": 20.0},
        ]
    )
    frame.attrs["slo_tpot_p50_ms"] = 50.0
    fig = figures.plot_tpot_vs_throughput(frame)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["a"].get_xdata()) == [50.0, 300.0, 340.0]
    assert list(lines["a"].get_ydata()) == [10.0, 45.0, 62.0]
    slo_lines = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [50.0, 50.0]]
    assert len(slo_lines) == 1
    # per layout: filled points meet the SLO, hollow ones miss it
    faces = [c.get_facecolors() for c in ax.collections]
    sizes = [len(c.get_offsets()) for c in ax.collections]
    assert sizes == [2, 1, 0, 1]
    assert len(faces[1]) == 0 and len(faces[3]) == 0  # "none" facecolors: hollow
    assert "TPOT p50 50 ms" in " ".join(t.get_text() for t in ax.texts)
    assert "SIMULATED l4 engines serving m" in ax.get_title()
    with pytest.raises(Exception, match="tpot_p50_ms"):
        figures.plot_tpot_vs_throughput(frame.drop(columns="tpot_p50_ms"))


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
    a_miss = {**_point("a", 12, usd=0.9, tpot=60.0, ttft=10.0), "tokens_per_s_per_gpu": 310.0}
    b_low = _point("b", 1, usd=4.0, tpot=10.0, ttft=10.0)
    b_high = {**_point("b", 8, usd=2.0, tpot=30.0, ttft=10.0), "tokens_per_s_per_gpu": 200.0}
    b_miss = {**_point("b", 12, usd=1.9, tpot=55.0, ttft=10.0), "tokens_per_s_per_gpu": 210.0}
    frame = _frame([a_low, a_high, a_miss, b_low, b_high, b_miss])
    rec = sizing.recommend(frame)
    table = sizing.check_recommendation(frame, rec)
    assert table["holds"].all() and len(table) == 6
    wrong = dataclasses.replace(rec, layout="b", rate_rps=8)
    with pytest.raises(ValidationError, match="no other layout's knee is cheaper") as info:
        sizing.check_recommendation(frame, wrong)
    assert len(info.value.problems) == 1
    flat = _frame([a_low, a_high, a_miss, b_low, {**b_high, "tokens_per_s_per_gpu": 50.0}, b_miss])
    flat.loc[5, "tokens_per_s_per_gpu"] = 60.0
    with pytest.raises(ValidationError, match="b: more load raises"):
        sizing.check_recommendation(flat, sizing.recommend(flat))
    # a sweep that stopped below the knee (its last step still meets the SLO) is not a knee
    short = _frame([a_low, a_high, b_low, b_high])
    with pytest.raises(ValidationError, match="swept to its knee") as info:
        sizing.check_recommendation(short, sizing.recommend(short))
    assert "raise load_fractions" in info.value.problems[0]


def test_steps_the_cpu_could_not_keep_on_time_are_flagged_in_the_reasons() -> None:
    frame = _frame(
        [
            {**_point("a", 10, usd=2.0, tpot=10.0, ttft=10.0), "sim_timing_error": 0.0},
            {**_point("a", 20, usd=1.0, tpot=60.0, ttft=10.0), "sim_timing_error": 0.15},
            {**_point("b", 10, usd=3.0, tpot=10.0, ttft=10.0), "sim_timing_error": 0.01},
        ]
    )
    rec = sizing.recommend(frame)
    assert list(rec.to_frame().set_index("layout")["late_steps"]) == [1, 0]
    caution = [r for r in rec.reasons if r.startswith("Caution")]
    assert len(caution) == 1 and "1 step(s) of a ran more than 5% slower" in caution[0]
