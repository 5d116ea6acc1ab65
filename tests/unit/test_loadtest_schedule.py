"""Seeded schedules: rates, inter-arrival distributions, bounds, prompts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from labutils.errors import LoadTestError
from labutils.loadtest.schedule import (
    arrival_offsets_s,
    closed_loop,
    make_prompt,
    open_loop,
    sweep,
)


def test_constant_rate_has_exact_gaps() -> None:
    offsets = arrival_offsets_s("constant", 50.0, requests=101)
    assert len(offsets) == 101
    assert offsets[0] == 0.0
    np.testing.assert_allclose(np.diff(offsets), 0.02)


def test_poisson_gaps_are_exponential_ks() -> None:
    rate = 40.0
    offsets = arrival_offsets_s("poisson", rate, seed=7, requests=4000)
    gaps = np.diff(offsets)
    assert np.mean(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    # A constant schedule must fail the same test: the KS check has power.
    const_gaps = np.diff(arrival_offsets_s("constant", rate, requests=4000))
    assert stats.kstest(const_gaps, "expon", args=(0, 1 / rate)).pvalue < 1e-6


def test_gamma_burstiness_keeps_mean_and_raises_variance() -> None:
    rate = 20.0
    bursty = np.diff(arrival_offsets_s("gamma", rate, seed=3, burstiness=0.25, requests=5000))
    smooth = np.diff(arrival_offsets_s("gamma", rate, seed=3, burstiness=4.0, requests=5000))
    assert np.mean(bursty) == pytest.approx(1 / rate, rel=0.1)
    assert np.mean(smooth) == pytest.approx(1 / rate, rel=0.05)
    # Coefficient of variation of gamma gaps is 1/sqrt(shape): 2 vs 0.5.
    assert np.std(bursty) / np.mean(bursty) == pytest.approx(2.0, rel=0.15)
    assert np.std(smooth) / np.mean(smooth) == pytest.approx(0.5, rel=0.1)
    assert stats.kstest(bursty, "gamma", args=(0.25, 0, 1 / (rate * 0.25))).pvalue > 0.01


def test_seed_reproduces_and_differs() -> None:
    a = arrival_offsets_s("poisson", 10.0, seed=1, requests=50)
    b = arrival_offsets_s("poisson", 10.0, seed=1, requests=50)
    c = arrival_offsets_s("poisson", 10.0, seed=2, requests=50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_duration_bound_gives_rate_times_duration() -> None:
    offsets = arrival_offsets_s("poisson", 200.0, seed=5, duration_s=10.0)
    assert offsets.max() < 10.0
    assert len(offsets) == pytest.approx(2000, rel=0.1)
    assert np.all(np.diff(offsets) >= 0)
    both = arrival_offsets_s("constant", 100.0, duration_s=10.0, requests=30)
    assert len(both) == 30


def test_invalid_or_unbounded_requests_raise() -> None:
    with pytest.raises(LoadTestError, match="unbounded"):
        arrival_offsets_s("poisson", 1.0)
    with pytest.raises(LoadTestError, match="constant, poisson, gamma"):
        arrival_offsets_s("uniform", 1.0, requests=3)
    with pytest.raises(LoadTestError, match="rate"):
        open_loop(0.0, requests=3)
    with pytest.raises(LoadTestError, match="concurrent"):
        closed_loop(0, requests=3)


def test_prompts_vary_by_seed_and_index_and_hit_target_length() -> None:
    p = make_prompt(0, 0, 100)
    assert len(p.split()) == 100
    assert p == make_prompt(0, 0, 100)
    assert p != make_prompt(0, 1, 100)
    assert p != make_prompt(1, 0, 100)
    # Different first words in most prompts: no shared prefix for a cache to exploit.
    firsts = {make_prompt(0, i, 8).split()[0] for i in range(50)}
    assert len(firsts) > 20


def test_schedule_frame_and_sweep() -> None:
    base = open_loop(10.0, arrival="constant", requests=20, input_tokens=32, output_tokens=16)
    frame = base.to_frame()
    assert list(frame.columns) == ["index", "offset_s", "input_tokens", "max_tokens"]
    assert len(frame) == 20 and frame["max_tokens"].eq(16).all()
    steps = sweep(base, rates_rps=[5, 10, 20])
    assert [s.rate_rps for s in steps] == [5, 10, 20]
    assert [s.seed for s in steps] == [0, 1, 2]
    assert steps[2].offsets_s[-1] == pytest.approx(19 / 20)
    closed = sweep(closed_loop(1, requests=10), concurrencies=[1, 4])
    assert [s.concurrency for s in closed] == [1, 4] and not closed[0].is_open_loop
    assert closed[1].label() == "c=4"
    with pytest.raises(LoadTestError):
        sweep(base)
