"""prometheus-adapter semantics: the lab's rule read from its ConfigMap, names, the metricsQuery
template rendered for a set of pods exactly as the adapter's ``Build`` does."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from labutils.config import manifests_dir
from labutils.metrics.adapter import (
    AdapterError,
    adapter_rules_from_objects,
    build_pods_query,
    metric_name_for_series,
    render_metrics_query,
    rule_for_metric,
)

CONFIGMAP = yaml.safe_load(
    (manifests_dir() / "monitoring" / "prometheus-adapter-rules.yaml").read_text()
)
RULES = adapter_rules_from_objects([CONFIGMAP])


def _rule(metrics_query: str, **raw: Any) -> Any:
    config = {
        "rules": [{
            "seriesQuery": 'vllm:num_requests_waiting{namespace!="",pod!=""}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                        "pod": {"resource": "pod"}}},
            "metricsQuery": metrics_query,
            **raw,
        }]
    }  # fmt: skip
    cm = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"c": yaml.safe_dump(config)}}
    (rule,) = adapter_rules_from_objects([cm])
    return rule


def test_the_lab_rule_renders_to_promql_for_the_leader_pods() -> None:
    waiting, kv = RULES
    assert metric_name_for_series(waiting, "vllm:num_requests_waiting") == (
        "vllm_num_requests_waiting"
    )
    pods = ["vllm-us-west-2a-0", "vllm-us-west-2a-1"]
    assert build_pods_query(waiting, "vllm:num_requests_waiting", "vllm-lab", pods) == (
        'sum(vllm:num_requests_waiting{namespace="vllm-lab",'
        'pod=~"vllm-us-west-2a-0|vllm-us-west-2a-1"}) by (pod)'
    )
    # one pod: an equality matcher (the adapter's LabelEq), not a regex
    assert build_pods_query(kv, "vllm:kv_cache_usage_perc", "vllm-lab", pods[:1]) == (
        'max(vllm:kv_cache_usage_perc{namespace="vllm-lab",pod="vllm-us-west-2a-0"}) by (pod)'
    )


def test_the_rule_serving_a_metric_is_found_from_discovered_series() -> None:
    discovered = [(RULES[0], ["vllm:num_requests_waiting"]), (RULES[1], [])]
    found = rule_for_metric(discovered, "vllm_num_requests_waiting")
    assert found == (RULES[0], "vllm:num_requests_waiting")
    assert rule_for_metric(discovered, "vllm_kv_cache_usage_perc") is None  # no series seen


def test_name_defaults_and_filters() -> None:
    rule = _rule("x", name={"matches": "^(.*)_total$"})
    assert metric_name_for_series(rule, "http_requests_total") == "http_requests"  # as: $1
    rule = _rule("x", name={"matches": "^(.*)_total$", "as": "${1}_per_second"})
    assert metric_name_for_series(rule, "http_requests_total") == "http_requests_per_second"
    rule = _rule("x", seriesFilters=[{"isNot": "^vllm:num_"}])
    assert metric_name_for_series(rule, "vllm:num_requests_waiting") is None
    assert metric_name_for_series(_rule("x"), "anything") == "anything"  # as: $0


def test_template_fields_and_trim_markers() -> None:
    values = {
        "Series": "s",
        "LabelMatchers": 'a="b"',
        "GroupBy": "pod",
        "GroupBySlice": ["pod"],
        "LabelValuesByName": {"pod": "p", "namespace": "n"},
    }
    assert render_metrics_query("sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                                values) == 'sum(s{a="b"}) by (pod)'  # fmt: skip
    assert render_metrics_query("x <<- .GroupBySlice ->> y", values) == "x[pod]y"
    assert render_metrics_query("<<.LabelValuesByName>>", values) == "map[namespace:n pod:p]"


def test_template_errors_name_the_problem() -> None:
    with pytest.raises(AdapterError, match="can't evaluate field Serie"):
        build_pods_query(_rule("sum(<<.Serie>>)"), "s", "ns", ["p"])
    with pytest.raises(AdapterError, match="unable to parse metrics query template"):
        build_pods_query(_rule("sum(<<.Series>)"), "s", "ns", ["p"])
    with pytest.raises(AdapterError, match="not a field reference"):
        build_pods_query(_rule('<<printf "%s" .Series>>'), "s", "ns", ["p"])


def test_a_rule_without_pod_label_cannot_serve_pods() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"c": yaml.safe_dump(
        {"rules": [{"seriesQuery": "s", "metricsQuery": "<<.Series>>", "resources": {
            "overrides": {"namespace": {"resource": "namespace"}}}}]})}}  # fmt: skip
    (rule,) = adapter_rules_from_objects([cm])
    with pytest.raises(AdapterError, match="no label for resource 'pod'"):
        build_pods_query(rule, "s", "ns", ["p"])
