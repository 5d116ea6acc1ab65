"""The one Prometheus text-format parser of the package, and what is read from it.

Every ``/metrics`` text in the lab goes through :func:`families` (``prometheus_client``'s
parser, which handles escaping, timestamps, ``+Inf`` and ``# EOF``): the notebooks' series,
the twin's autoscaler, the histograms of notebook 03 and the real-engine contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from labutils.errors import MetricsError
from labutils.protocol import MetricsScrape

__all__ = [
    "Histogram",
    "ParsedScrape",
    "families",
    "histograms",
    "parse_scrape",
    "sample_value",
]


def families(text: str, *, where: str = "/metrics") -> list[Metric]:
    """Parse Prometheus text exposition format into metric families.

    Counters are named without ``_total`` (as the parser reports them); their samples keep it.

    Raises:
        MetricsError: ``text`` is not the Prometheus text format (names ``where``).
    """
    try:
        return list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise MetricsError(f"{where}: not Prometheus text format ({exc})") from None


def sample_value(
    text: str, sample: str, labels: Mapping[str, str] | None = None, *, where: str = "/metrics"
) -> float | None:
    """Sum of the samples named ``sample`` whose labels include ``labels``; ``None`` if absent.

    A sample with a timestamp (``name{...} 3 1700000000000``) is read as its value, 3.
    """
    want = dict(labels or {})
    total = 0.0
    found = False
    for family in families(text, where=where):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in want.items()):
                total += s.value
                found = True
    return total if found else None


@dataclass(frozen=True)
class Histogram:
    """A histogram summed over its series: upper bounds, cumulative counts, sum and count."""

    bounds: np.ndarray
    cumulative: np.ndarray
    total: float
    count: float

    def minus(self, old: Histogram | None) -> Histogram:
        """The observations since ``old`` (itself when there is no baseline or the counters
        were reset by an engine restart, as Prometheus's ``increase`` treats a reset)."""
        if old is None or not np.array_equal(self.bounds, old.bounds) or self.count < old.count:
            return self
        return Histogram(
            self.bounds, self.cumulative - old.cumulative, self.total - old.total,
            self.count - old.count,
        )  # fmt: skip

    def plus(self, other: Histogram | None) -> Histogram:
        """Both histograms' observations (same buckets)."""
        if other is None:
            return self
        return Histogram(
            self.bounds, self.cumulative + other.cumulative, self.total + other.total,
            self.count + other.count,
        )  # fmt: skip


def histograms(text: str, *, where: str = "/metrics") -> dict[str, Histogram]:
    """Every histogram family of a scrape, summed over its label sets."""
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in families(text, where=where):
        if family.type != "histogram":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                per = buckets.setdefault(family.name, {})
                bound = float(s.labels["le"])
                per[bound] = per.get(bound, 0.0) + s.value
            elif s.name.endswith("_sum"):
                sums[family.name] = sums.get(family.name, 0.0) + s.value
            elif s.name.endswith("_count"):
                counts[family.name] = counts.get(family.name, 0.0) + s.value
    return {
        name: Histogram(
            np.array(sorted(per)),
            np.array([per[k] for k in sorted(per)]),
            sums.get(name, 0.0),
            counts.get(name, 0.0),
        )
        for name, per in buckets.items()
    }


class _Scrapes(Protocol):
    def scrape_metrics(self) -> list[MetricsScrape]: ...


@dataclass(frozen=True)
class ParsedScrape:
    """One scrape reduced to what the series need (values summed over engines and labels)."""

    zone: str
    group: str
    time_s: float
    gauges: dict[str, float]  # family -> value
    counters: dict[str, float]  # family -> value (the _total sample)
    buckets: dict[str, tuple[np.ndarray, np.ndarray]]  # family -> (upper bounds, cumulative)
    families: frozenset[str]


def parse_scrape(scrape: MetricsScrape) -> ParsedScrape:
    """Parse one scrape's text (``prometheus_client.parser``).

    Raises:
        MetricsError: the scrape failed or its text is not the Prometheus text format.
    """
    where = f"/metrics of {scrape.group} ({scrape.zone})"
    if scrape.error:
        raise MetricsError(f"{where} failed: {scrape.error}")
    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    names: set[str] = set()
    for family in families(scrape.text, where=where):
        names.add(family.name)
        for sample in family.samples:
            if family.type == "gauge":
                gauges[family.name] = gauges.get(family.name, 0.0) + sample.value
            elif family.type == "counter" and sample.name.endswith("_total"):
                counters[family.name] = counters.get(family.name, 0.0) + sample.value
            elif family.type == "histogram" and sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                per_bound = buckets.setdefault(family.name, {})
                per_bound[bound] = per_bound.get(bound, 0.0) + sample.value
    arrays = {
        name: (np.array(sorted(b)), np.array([b[k] for k in sorted(b)]))
        for name, b in buckets.items()
    }
    return ParsedScrape(
        scrape.zone, scrape.group, scrape.time_s, gauges, counters, arrays, frozenset(names)
    )


def _require(parsed: ParsedScrape, family: str) -> None:
    if family in parsed.families:
        return
    old = [o for o, new in _RENAMED.items() if new == family and o in parsed.families]
    hint = f" (the scrape has the removed name {old[0]}: upgrade vLLM)" if old else ""
    raise MetricsError(
        f"metric {family} missing from /metrics of {parsed.group} ({parsed.zone}){hint}; "
        "is this a vLLM >= 0.10 server?"
    )


# Names older dashboards use -> the current name (vllm-metrics.md "Removed names").
_RENAMED: dict[str, str] = {
    "vllm:gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
    "vllm:time_per_output_token_seconds": "vllm:inter_token_latency_seconds",
}
