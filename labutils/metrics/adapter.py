"""prometheus-adapter's custom-metrics rules, evaluated as the adapter evaluates them.

On EKS the HPA's ``Pods`` metric ``vllm_num_requests_waiting`` comes from prometheus-adapter:
a rule's ``seriesQuery`` discovers the series, ``name.matches``/``as`` renames them,
``resources.overrides`` maps Prometheus labels to Kubernetes resources, and ``metricsQuery``
(a Go template with ``<<`` ``>>`` delimiters) becomes the PromQL run for the pods the HPA asks
about. The local twin runs the same rule, through :func:`pods_metric_async`, against its own
Prometheus, so a wrong rule breaks the twin's autoscaling the way it breaks the cluster's.

Semantics follow kubernetes-sigs/prometheus-adapter v0.12.0:

- ``pkg/naming/metric_namer.go`` ``NamersFromConfig``: the default ``as`` is ``$0`` without a
  capture group and ``$1`` with one; ``seriesFilters`` and ``name.matches`` filter series names;
  ``MetricNameForSeries`` expands ``as`` with the match (Go ``Regexp.ExpandString``).
- ``pkg/naming/metrics_query.go`` ``Build``: ``LabelMatchers`` = the namespace matcher then the
  resource matcher (``pod="a"`` for one name, ``pod=~"a|b"`` for several), ``GroupBy`` = the
  resource label; the template is parsed once (a parse error stops the adapter) and executed per
  request.
- ``pkg/custom-provider/provider.go`` ``GetMetricBySelector``/``metricsFor``/``metricFor``: one
  instant query at *now*; a non-vector result or a failed query is "unable to fetch metrics";
  values are matched to pods by the resource label; pods without a value are left out; NaN
  becomes 0; values are milli-quantities (``int64(value * 1000)``, truncated).
- ``pkg/custom-provider/series_registry.go``: a metric exists only once its ``seriesQuery``
  found series carrying the resource labels (else "the server could not find the metric").

The HPA wraps the answer (kubernetes ``pkg/controller/podautoscaler/metrics/client.go``
``GetRawMetric`` and ``replica_calculator.go``): "unable to get metric NAME: unable to fetch
metrics from custom metrics API: ..." or "... no metrics returned from custom metrics API".
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml

from labutils.errors import MetricsError
from labutils.metrics.prometheus import HttpPrometheus

__all__ = [
    "AdapterError",
    "AdapterRule",
    "PodsMetric",
    "adapter_rules_from_objects",
    "build_pods_query",
    "metric_name_for_series",
    "pods_metric_async",
    "render_metrics_query",
    "rule_for_metric",
]

_ACTION = re.compile(r"<<(-?)\s*(.*?)\s*(-?)>>", re.S)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_FIELDS = ("Series", "LabelMatchers", "LabelValuesByName", "GroupBy", "GroupBySlice")
_DEFAULT_MAX_AGE_S = 600.0  # --metrics-relist-interval defaults to 10m; max age follows it


class AdapterError(MetricsError):
    """The custom metrics API would answer with an error (message as the HPA reports it)."""


@dataclass(frozen=True)
class AdapterRule:
    """One ``rules:`` entry of prometheus-adapter's config."""

    series_query: str
    metrics_query: str
    resource_labels: tuple[tuple[str, str], ...]  # (resource, Prometheus label): pod -> pod
    name_matches: str = ""
    name_as: str = ""
    series_filters: tuple[tuple[str, str], ...] = ()  # ("is" | "isNot", regex)
    namespaced: bool = True
    source: str = ""  # where the rule was read (for messages)

    def label_for(self, resource: str) -> str:
        """The Prometheus label of ``resource`` (``pods`` and ``pod`` are the same resource)."""
        key = _singular(resource)
        labels = dict(self.resource_labels)
        if key not in labels:
            raise AdapterError(
                f"{self.source}: rule {self.series_query!r} has no label for resource {key!r} "
                f"(resources.overrides names: {', '.join(sorted(labels)) or '-'})"
            )
        return labels[key]


@dataclass(frozen=True)
class PodsMetric:
    """The custom metrics API's answer for some pods, with what produced it."""

    metric: str
    query: str  # the PromQL the adapter ran
    time_s: float  # evaluation time (Unix seconds)
    values: dict[str, float] = field(default_factory=dict)  # pod -> value (milli-truncated)


def _singular(resource: str) -> str:
    name = resource.split(".")[0].lower()
    return name[:-1] if name.endswith("s") and name not in ("status",) else name


def _rule(raw: Mapping[str, Any], source: str) -> AdapterRule:
    resources = raw.get("resources") or {}
    if resources.get("template"):
        raise AdapterError(
            f"{source}: resources.template is not evaluated by the lab (use resources.overrides)"
        )
    labels = tuple(
        sorted(
            (_singular(str((target or {}).get("resource", ""))), str(label))
            for label, target in (resources.get("overrides") or {}).items()
        )
    )
    name = raw.get("name") or {}
    filters = tuple(
        (kind, str(flt[kind]))
        for flt in raw.get("seriesFilters") or []
        for kind in ("is", "isNot")
        if flt.get(kind)
    )
    namespaced = resources.get("namespaced")
    return AdapterRule(
        series_query=str(raw.get("seriesQuery", "")),
        metrics_query=str(raw.get("metricsQuery", "")),
        resource_labels=labels,
        name_matches=str(name.get("matches") or ""),
        name_as=str(name.get("as") or ""),
        series_filters=filters,
        namespaced=True if namespaced is None else bool(namespaced),
        source=source,
    )


def adapter_rules_from_objects(objects: Iterable[Mapping[str, Any]]) -> tuple[AdapterRule, ...]:
    """The ``rules`` of every ConfigMap holding a prometheus-adapter config (``seriesQuery``).

    Raises:
        AdapterError: a config is not YAML or a rule uses what the lab does not evaluate.
    """
    rules: list[AdapterRule] = []
    for obj in objects:
        if obj.get("kind") != "ConfigMap":
            continue
        name = str((obj.get("metadata") or {}).get("name", "?"))
        for key, text in (obj.get("data") or {}).items():
            if "seriesQuery" not in str(text):
                continue
            where = f"{obj.get('__source__') or 'ConfigMap'} {name} data.{key}"
            try:
                config = yaml.safe_load(str(text)) or {}
            except yaml.YAMLError as exc:
                raise AdapterError(f"{where}: not valid YAML ({exc})") from None
            for i, raw in enumerate(config.get("rules") or []):
                rules.append(_rule(raw or {}, f"{where} rules[{i}]"))
    return tuple(rules)


def _go_expand(template: str, match: re.Match[str]) -> str:
    # Go's Regexp.ExpandString: $1, ${1}, $name, ${name} (a name is the longest run of
    # letters, digits and underscores, so $1x means ${1x}); $$ is a literal $; a reference to
    # a missing group expands to nothing.
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = m.group(1) or m.group(2)
        try:
            return match.group(int(ref) if ref.isdigit() else ref) or ""
        except IndexError:
            return ""

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", repl, template)


def metric_name_for_series(rule: AdapterRule, series: str) -> str | None:
    """The custom metric name ``series`` is served as under ``rule`` (``None``: filtered out)."""
    for kind, regex in rule.series_filters:
        if bool(re.search(regex, series)) != (kind == "is"):
            return None
    matcher = re.compile(rule.name_matches or ".*")
    match = matcher.search(series)
    if match is None:
        return None
    name_as = rule.name_as or ("$0" if matcher.groups == 0 else "$1")
    if not rule.name_as and matcher.groups > 1:
        raise AdapterError(
            f"{rule.source}: must specify an 'as' value for name matcher {rule.name_matches!r}"
        )
    return _go_expand(name_as, match)


def render_metrics_query(template: str, values: Mapping[str, Any], *, where: str = "") -> str:
    """Execute a ``metricsQuery`` Go template (``<<.Field>>`` actions, trim markers).

    Supports what adapter configs use in practice: field references to ``Series``,
    ``LabelMatchers``, ``GroupBy`` (strings), ``GroupBySlice`` and ``LabelValuesByName``
    (printed as Go prints them). Anything else (functions, pipelines, ``range``) raises.

    Raises:
        AdapterError: an unclosed action (the adapter would not start: "unable to parse metrics
            query template") or an unknown field ("can't evaluate field").
    """
    prefix = f"{where}: " if where else ""
    opened, closed = template.count("<<"), template.count(">>")
    if opened != closed:
        raise AdapterError(
            f"{prefix}unable to parse metrics query template {template!r}: unclosed action"
        )
    out: list[str] = []
    pos = 0
    for action in _ACTION.finditer(template):
        text = template[pos : action.start()]
        if action.group(1):
            text = text.rstrip()
        out.append(text)
        body = action.group(2)
        field_ref = _FIELD.fullmatch(body)
        if not field_ref:
            raise AdapterError(
                f"{prefix}metrics query template action <<{body}>> is not a field reference; "
                "the lab evaluates <<.Series>>, <<.LabelMatchers>>, <<.GroupBy>> and the like"
            )
        name = field_ref.group(1)
        if name not in _FIELDS:
            raise AdapterError(
                f'{prefix}template: metrics-query: executing "metrics-query" at <.{name}>: '
                f"can't evaluate field {name} in type naming.queryTemplateArgs"
            )
        out.append(_go_print(values.get(name, "")))
        pos = action.end()
        if action.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    out.append(template[pos:])
    return "".join(out)


def _go_print(value: Any) -> str:
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(str(v) for v in value) + "]"
    return str(value)


def _quote(value: str) -> str:
    # Go's %q, as prometheus-adapter's LabelEq/LabelMatches write label values.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_pods_query(rule: AdapterRule, series: str, namespace: str, pods: Sequence[str]) -> str:
    """The PromQL the adapter runs for ``pods`` of ``namespace`` (``metricsQuery.Build``)."""
    matchers: list[str] = []
    values: dict[str, str] = {}
    if rule.namespaced and namespace:
        ns_label = rule.label_for("namespace")
        matchers.append(f"{ns_label}={_quote(namespace)}")
        values[ns_label] = namespace
    pod_label = rule.label_for("pod")
    joined = "|".join(pods)
    matchers.append(f"{pod_label}{'=~' if len(pods) > 1 else '='}{_quote(joined)}")
    values[pod_label] = joined
    args = {
        "Series": series,
        "LabelMatchers": ",".join(matchers),
        "LabelValuesByName": values,
        "GroupBy": pod_label,
        "GroupBySlice": [pod_label],
    }
    return render_metrics_query(rule.metrics_query, args, where=rule.source)


def rule_for_metric(
    discovered: Sequence[tuple[AdapterRule, Sequence[str]]], metric: str
) -> tuple[AdapterRule, str] | None:
    """The first rule (and its series) serving ``metric``, given each rule's discovered series."""
    for rule, names in discovered:
        for series in names:
            if metric_name_for_series(rule, series) == metric:
                return rule, series
    return None


def _not_found(metric: str) -> AdapterError:
    return AdapterError(
        f"unable to get metric {metric}: unable to fetch metrics from custom metrics API: "
        f"the server could not find the metric {metric} for pods"
    )


async def _discover(
    api: HttpPrometheus,
    session: aiohttp.ClientSession,
    rule: AdapterRule,
    now_s: float,
    max_age_s: float,
) -> list[str]:
    # The adapter's relist: GET /api/v1/series?match[]=<seriesQuery>&start=<now - max age>;
    # a series counts for pods only when it carries the namespace and pod labels.
    params = {"match[]": rule.series_query, "start": f"{now_s - max_age_s:.3f}"}
    body = await api.get_async("series", params, session)
    if body.get("status") != "success":
        return []  # the adapter logs the failed relist and serves nothing from this rule
    needed = [rule.label_for("pod")] + ([rule.label_for("namespace")] if rule.namespaced else [])
    names = {
        str(s.get("__name__"))
        for s in body.get("data") or []
        if all(s.get(label) for label in needed)
    }
    return sorted(names)


async def pods_metric_async(
    prometheus_url: str,
    rules: Sequence[AdapterRule],
    metric: str,
    namespace: str,
    pods: Sequence[str],
    *,
    session: aiohttp.ClientSession | None = None,
    max_age_s: float = _DEFAULT_MAX_AGE_S,
) -> PodsMetric:
    """The custom metrics API's ``Pods`` metric ``metric`` for ``pods``, as the HPA gets it.

    Raises:
        AdapterError: with the message the HPA records in its ``FailedGetPodsMetric`` event
            (metric unknown, query refused, or no value for any pod).
        MetricsError: Prometheus itself is unreachable.
    """
    api = HttpPrometheus(prometheus_url)
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        now_s = time.time()
        discovered = [(r, await _discover(api, client, r, now_s, max_age_s)) for r in rules]
        found = rule_for_metric(discovered, metric)
        if found is None or not pods:
            raise _not_found(metric)
        rule, series = found
        promql = build_pods_query(rule, series, namespace, pods)
        eval_s = time.time()
        body = await api.get_async("query", {"query": promql, "time": f"{eval_s:.3f}"}, client)
    finally:
        if own:
            await client.close()
    if body.get("status") != "success":
        raise AdapterError(
            f"unable to get metric {metric}: unable to fetch metrics from custom metrics API: "
            f"Internal error occurred: unable to fetch metrics (adapter log: query {promql!r} "
            f"failed: {body.get('errorType', 'error')}: {body.get('error', '')})"
        )
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise AdapterError(
            f"unable to get metric {metric}: unable to fetch metrics from custom metrics API: "
            f"Internal error occurred: unable to fetch metrics (adapter log: expected vector, "
            f"got {data.get('resultType')} from {promql!r})"
        )
    pod_label = rule.label_for("pod")
    by_pod: dict[str, float] = {}
    for sample in data.get("result") or []:
        raw = float(sample["value"][1])
        value = 0.0 if math.isnan(raw) else math.trunc(raw * 1000) / 1000
        by_pod[str((sample.get("metric") or {}).get(pod_label, ""))] = value
    values = {p: by_pod[p] for p in pods if p in by_pod}
    if not values:
        raise AdapterError(
            f"unable to get metric {metric}: no metrics returned from custom metrics API "
            f"(query {promql!r} matched no pod of {', '.join(pods)})"
        )
    return PodsMetric(metric=metric, query=promql, time_s=eval_s, values=values)
