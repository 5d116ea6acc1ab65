"""Offline schema validation: Kubernetes OpenAPI schemas for built-in kinds, the lab's own
JSON schemas (``labutils/schemas/``) for the custom kinds the lab uses.

Built-in kinds use kubernetes-validate's *strict* schemas (unknown fields are errors). The
custom-kind schemas ``$ref`` the same Kubernetes definitions for embedded pod templates, so a
LeaderWorkerSet's pod spec is checked as strictly as a Deployment's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

__all__ = ["CUSTOM_KINDS", "K8S_VERSION", "SchemaFinding", "schema_findings"]

# The Kubernetes minor the lab targets (EKS standard support, late 2026).
K8S_VERSION = "1.34"

# kind -> (apiVersion, schema file) for the custom resources the lab deploys.
CUSTOM_KINDS: dict[str, tuple[str, str]] = {
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io/v1", "leaderworkerset.json"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproute.json"),
    "Gateway": ("gateway.networking.k8s.io/v1", "gateway.json"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobject.json"),
    "NodePool": ("karpenter.sh/v1", "nodepool.json"),
    "EC2NodeClass": ("karpenter.k8s.aws/v1", "ec2nodeclass.json"),
    "PodMonitor": ("monitoring.coreos.com/v1", "podmonitor.json"),
}

FieldPath = tuple[str | int, ...]
SchemaFinding = tuple[FieldPath, str]


def _k8s_schema_dir() -> Any:
    base = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    return base.joinpath(f"v{K8S_VERSION}.0-local-strict")


@lru_cache(maxsize=1)
def _registry() -> Registry:
    defs = json.loads(_k8s_schema_dir().joinpath("_definitions.json").read_text())
    registry: Registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schemas = resources.files("labutils").joinpath("schemas")
    for entry in schemas.iterdir():
        if entry.name.endswith(".json"):
            contents = json.loads(entry.read_text())
            registry = registry.with_resource(contents["$id"], Resource.from_contents(contents))
    return registry


@lru_cache(maxsize=64)
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    if kind in CUSTOM_KINDS:
        file = CUSTOM_KINDS[kind][1]
        schema = json.loads(resources.files("labutils").joinpath("schemas", file).read_text())
    else:
        # kubernetes-validate names files <kind>-<group prefix>-<version>.json
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        entry = _k8s_schema_dir().joinpath(f"{kind.lower()}-{group_version}.json")
        if not entry.is_file():
            return None
        schema = json.loads(entry.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: jsonschema.ValidationError) -> tuple[FieldPath, str]:
    path: FieldPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)'", error.message.split("(")[-1])
        known = sorted(schema.get("properties", {}))
        hint = f"; expected one of: {', '.join(known)}" if known else ""
        name = extra[0] if extra else "?"
        return (*path, name), f"unknown field {name!r}{hint}"
    if error.validator == "required":
        missing = re.findall(r"'([^']+)'", error.message)
        name = missing[0] if missing else "?"
        return (*path, name), f"required field {name!r} is missing"
    if error.validator == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return path, f"{_short(error.instance)} is not allowed; expected one of: {choices}"
    if error.validator == "const":
        return path, f"{_short(error.instance)} is not allowed; expected {error.validator_value!r}"
    if error.validator == "type":
        return path, f"expected {error.validator_value}, got {_short(error.instance)}"
    if error.validator in ("minimum", "maximum", "minItems", "maxItems", "minLength", "pattern"):
        return (
            path,
            f"{_short(error.instance)} violates {error.validator}={error.validator_value!r}",
        )
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        sub_path, message = _describe(best)
        return (*path, *sub_path[len(path) :]) if sub_path[: len(path)] == path else path, message
    return path, error.message if len(error.message) < 200 else error.message[:197] + "..."


def schema_findings(data: dict[str, Any]) -> Iterator[SchemaFinding]:
    """Yield ``(field path, message)`` for every schema violation of one object.

    An unknown ``apiVersion``/``kind`` is itself a finding (with the expected apiVersion when
    the kind is one the lab knows).
    """
    kind = str(data.get("kind", ""))
    api_version = str(data.get("apiVersion", ""))
    if not kind or not api_version:
        missing = "kind" if not kind else "apiVersion"
        yield (missing,), f"not a Kubernetes object: {missing!r} is missing"
        return
    if kind in CUSTOM_KINDS and api_version != CUSTOM_KINDS[kind][0]:
        expected = CUSTOM_KINDS[kind][0]
        yield ("apiVersion",), f"{kind} {api_version!r} is not served; use {expected!r}"
        # Check the rest as if it said the current version: the fix is usually just that line.
        data = {**data, "apiVersion": expected}
        api_version = expected
    validator = _validator(api_version, kind)
    if validator is None:
        known = ", ".join(sorted(CUSTOM_KINDS))
        yield (
            ("kind",),
            f"no schema for {api_version}/{kind} in Kubernetes {K8S_VERSION} nor the lab's "
            f"custom kinds ({known})",
        )
        return
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        yield _describe(error)
