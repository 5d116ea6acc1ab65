"""Metrics: the one Prometheus parser, series and quantiles, the scrape loop, PromQL.

- :mod:`labutils.metrics.parse`: Prometheus text format -> families, samples, histograms.
- :mod:`labutils.metrics.series`: scrapes -> tidy time series, load balance, HPA-grounded
  recommendations, ``histogram_quantile`` as Prometheus computes it.
- :mod:`labutils.metrics.scrape`: one bounded scrape loop over URLs or a backend's leaders.
- :mod:`labutils.metrics.prometheus`: Prometheus's HTTP API (PromQL) as DataFrames, on both
  targets (``query``/``query_range``/``alerts``/``lab_queries``).
- :mod:`labutils.metrics.adapter`: prometheus-adapter's rules evaluated as the adapter does (the
  twin's HPA input).
- :mod:`labutils.metrics.addons`: the alerting rules and Grafana dashboard for the cluster.
"""

from __future__ import annotations

from labutils.metrics.parse import (
    Histogram,
    ParsedScrape,
    families,
    histograms,
    parse_scrape,
    sample_value,
)
from labutils.metrics.series import (
    balance,
    histogram_quantile,
    load_distribution,
    metrics_frame,
    recommendations,
)

__all__ = [
    "Histogram",
    "ParsedScrape",
    "balance",
    "families",
    "histogram_quantile",
    "histograms",
    "load_distribution",
    "metrics_frame",
    "parse_scrape",
    "recommendations",
    "sample_value",
]
