"""Metrics parsing against a real vLLM scrape; rates, bucket-delta quantiles, advice."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from labutils.errors import MetricsError
from labutils.metrics.parse import parse_scrape
from labutils.metrics.series import (
    balance,
    histogram_quantile,
    load_distribution,
    metrics_frame,
    recommendations,
)
from labutils.protocol import MetricsScrape

_LINE = re.compile(r"^(?P<name>[^{\s]+)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")


@pytest.fixture
def text(data_dir: Path) -> str:
    return (data_dir / "vllm-0.32.0-cpu-metrics.txt").read_text()


def _bump(text: str, sample: str, delta: float, *, from_le: float | None = None) -> str:
    """Add ``delta`` to every sample called ``sample`` (buckets: only those with le >= from_le)."""
    out = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match["name"] == sample:
            le = re.search(r'le="([^"]+)"', match["labels"] or "")
            if from_le is None or (le and float(le.group(1)) >= from_le):
                value = float(match["value"]) + delta
                line = f"{match['name']}{match['labels'] or ''} {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_parse_real_scrape(text: str) -> None:
    parsed = parse_scrape(MetricsScrape("us-west-2a", "vllm-us-west-2a-0", 10.0, text))
    assert parsed.counters["vllm:generation_tokens"] == 88361.0
    assert parsed.gauges["vllm:num_requests_waiting"] == 0.0
    bounds, cumulative = parsed.buckets["vllm:time_to_first_token_seconds"]
    assert bounds[0] == 0.001 and math.isinf(bounds[-1]) and len(bounds) == 23
    assert cumulative[-1] == 2164.0 and np.all(np.diff(cumulative) >= 0)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = np.array([0.1, 0.2, 0.4, math.inf])
    cumulative = np.array([0.0, 10.0, 20.0, 20.0])
    assert histogram_quantile(0.25, bounds, cumulative) == pytest.approx(0.15)
    assert histogram_quantile(0.75, bounds, cumulative) == pytest.approx(0.3)
    assert math.isnan(histogram_quantile(0.5, bounds, np.zeros(4)))
    in_inf = np.array([0.0, 0.0, 1.0, 10.0])
    assert histogram_quantile(0.99, bounds, in_inf) == 0.4  # the highest finite bound


def test_rates_and_quantiles_from_deltas(text: str) -> None:
    later = _bump(text, "vllm:generation_tokens_total", 100)
    later = _bump(later, "vllm:request_success_total", 2)  # one label set per reason: 5 series
    # Ten new TTFT observations, all in the (0.02, 0.04] bucket.
    later = _bump(later, "vllm:time_to_first_token_seconds_bucket", 10, from_le=0.04)
    later = _bump(later, "vllm:num_requests_waiting", 7)
    frame = metrics_frame(
        [MetricsScrape("z", "g", 100.0, text), MetricsScrape("z", "g", 102.0, later)]
    )
    first, second = frame.iloc[0], frame.iloc[1]
    assert math.isnan(first["generation_tokens_per_s"]) and math.isnan(first["ttft_p50_s"])
    assert second["generation_tokens_per_s"] == pytest.approx(50.0)
    reasons = text.count("vllm:request_success_total{")
    assert second["requests_per_s"] == pytest.approx(2 * reasons / 2.0)
    assert second["waiting"] == 7.0
    assert 0.02 < second["ttft_p50_s"] <= 0.04
    assert second["ttft_p50_s"] == pytest.approx(0.03)
    # No ITL observations in the interval: NaN, not 0.
    assert math.isnan(second["itl_p95_s"])


def test_counter_reset_counts_from_zero(text: str) -> None:
    restarted = _bump(text, "vllm:generation_tokens_total", -88361 + 40)
    frame = metrics_frame(
        [MetricsScrape("z", "g", 0.0, text), MetricsScrape("z", "g", 4.0, restarted)]
    )
    assert frame.iloc[1]["generation_tokens_per_s"] == pytest.approx(10.0)


def test_missing_series_is_an_error_naming_it(text: str) -> None:
    no_waiting = "\n".join(
        line for line in text.splitlines() if "vllm:num_requests_waiting" not in line
    )
    with pytest.raises(MetricsError, match="vllm:num_requests_waiting missing"):
        metrics_frame([MetricsScrape("z", "g", 0.0, no_waiting)])
    old = text.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    with pytest.raises(MetricsError, match="removed name vllm:gpu_cache_usage_perc"):
        metrics_frame([MetricsScrape("z", "g", 0.0, old)])


def test_failed_scrape_is_nan_with_warning(text: str) -> None:
    scrapes = [
        MetricsScrape("z", "g", 0.0, text),
        MetricsScrape("z", "g", 1.0, "", error="GET http://x/metrics: 503"),
    ]
    with pytest.warns(UserWarning, match="1 of 2 scrapes failed"):
        frame = metrics_frame(scrapes)
    assert frame.iloc[1]["error"].endswith("503")
    assert math.isnan(frame.iloc[1]["running"])
    with pytest.raises(MetricsError, match="failed"):
        parse_scrape(scrapes[1])


def test_distribution_balance_and_hpa_advice(text: str) -> None:
    scrapes = []
    for zone, tokens, waiting in (("a", 300, 12), ("b", 100, 0)):
        later = _bump(text, "vllm:generation_tokens_total", tokens)
        later = _bump(later, "vllm:num_requests_waiting", waiting)
        scrapes += [
            MetricsScrape(zone, f"vllm-{zone}-0", 0.0, text),
            MetricsScrape(zone, f"vllm-{zone}-0", 1.0, later),
        ]
    frame = metrics_frame(scrapes)
    dist = load_distribution(frame).set_index("zone")
    assert dist.loc["a", "share"] == pytest.approx(0.75)
    assert balance([1, 1, 1]) == pytest.approx(1.0)
    assert balance([1, 0]) == pytest.approx(0.5)
    assert balance(dist["generation_tokens_per_s"]) == pytest.approx(16 / 20)
    hpa = {
        "metadata": {"name": "vllm-a"},
        "spec": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "vllm_num_requests_waiting"},
                        "target": {"type": "AverageValue", "averageValue": "5"},
                    },
                }
            ],
        },
    }
    advice = recommendations(frame, hpas={"a": hpa, "b": hpa})
    hpa_rows = advice[advice["kind"].eq("hpa")].set_index("zone")
    assert hpa_rows.loc["a", "value"] == 3  # ceil(1 * 12 / 5)
    assert "scale up to 3" in hpa_rows.loc["a", "message"]
    assert hpa_rows.loc["b", "value"] == 1  # 0 waiting, held at minReplicas
    assert "balance" in set(advice["kind"])
