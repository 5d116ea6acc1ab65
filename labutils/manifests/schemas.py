"""Offline schema validation: Kubernetes OpenAPI schemas for built-in kinds, the vendored
upstream CRD schemas (``labutils/schemas/crd-*.json``) for the custom kinds the lab uses.

Built-in kinds use kubernetes-validate's *strict* schemas (unknown fields are errors). A CRD's
``openAPIV3Schema`` is turned into JSON Schema the way kube-apiserver applies it with strict
field validation (``kubectl apply --validate=strict``): an object that lists ``properties``
rejects any other field unless it says ``x-kubernetes-preserve-unknown-fields``;
``x-kubernetes-int-or-string`` accepts an integer or a string; ``nullable`` admits null;
``metadata`` is checked as a Kubernetes ObjectMeta. CEL rules (``x-kubernetes-validations``)
run only in the API server and are not evaluated here. Where each schema comes from (repository,
tag, path, license) is in ``labutils/schemas/SOURCES.md`` and in each file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from referencing import Registry, Resource

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "CUSTOM_KINDS",
    "K8S_VERSION",
    "SchemaFinding",
    "crd_source",
    "schema_findings",
]

# The Kubernetes minor the lab targets (EKS standard support, late 2026).
K8S_VERSION = "1.34"
_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
_OBJECT_META = _DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@lru_cache(maxsize=1)
def _crd_files() -> dict[str, tuple[str, str, str]]:
    """kind -> (apiVersion, file name, scope) for every vendored CRD schema."""
    out: dict[str, tuple[str, str, str]] = {}
    for entry in sorted(
        resources.files("labutils").joinpath("schemas").iterdir(), key=lambda e: e.name
    ):
        if entry.name.startswith("crd-") and entry.name.endswith(".json"):
            source = json.loads(entry.read_text())["x-lab-source"]
            out[source["kind"]] = (source["apiVersion"], entry.name, source["scope"])
    return out


# kind -> (apiVersion, schema file) for the custom resources the lab deploys or installs.
CUSTOM_KINDS: dict[str, tuple[str, str]] = {k: (v[0], v[1]) for k, v in _crd_files().items()}

# Built-in kinds that are cluster-scoped (custom ones: the CRD's ``scope``).
_BUILTIN_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "CSIDriver",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
    }
)


# Kinds that live outside any namespace (built-in ones and the vendored CRDs').
CLUSTER_SCOPED_KINDS: frozenset[str] = _BUILTIN_CLUSTER_SCOPED | {
    k for k, (_, _, scope) in _crd_files().items() if scope == "Cluster"
}

FieldPath = tuple[str | int, ...]
SchemaFinding = tuple[FieldPath, str]


def crd_source(kind: str) -> dict[str, str]:
    """Where the vendored schema of ``kind`` comes from (repository, tag, path, license)."""
    file = _crd_files()[kind][1]
    data = json.loads(resources.files("labutils").joinpath("schemas", file).read_text())
    return dict(data["x-lab-source"])


def _k8s_schema_dir() -> Any:
    base = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    return base.joinpath(f"v{K8S_VERSION}.0-local-strict")


@lru_cache(maxsize=1)
def _registry() -> Registry:
    defs = json.loads(_k8s_schema_dir().joinpath("_definitions.json").read_text())
    return Registry().with_resource(defs["$id"], Resource.from_contents(defs))


def _strict(node: Any) -> Any:
    """A CRD structural schema node as strict JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key.startswith("x-kubernetes-") or key == "nullable":
            continue
        else:
            out[key] = _strict(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **out}
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@lru_cache(maxsize=16)
def _crd_schema(kind: str) -> dict[str, Any]:
    api_version, file, _ = _crd_files()[kind]
    data = json.loads(resources.files("labutils").joinpath("schemas", file).read_text())
    schema = _strict(data["openAPIV3Schema"])
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    props["metadata"] = {"$ref": _OBJECT_META}
    schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
    schema["additionalProperties"] = False
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


@lru_cache(maxsize=64)
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    if kind in CUSTOM_KINDS:
        schema = _crd_schema(kind)
    else:
        # kubernetes-validate names files <kind>-<group prefix>-<version>.json
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        entry = _k8s_schema_dir().joinpath(f"{kind.lower()}-{group_version}.json")
        if not entry.is_file():
            return None
        schema = json.loads(entry.read_text())
    # Imported here: jsonschema's format checkers take ~1.5 s to import (a grammar compiled at
    # import time), which every labctl command would otherwise pay.
    import jsonschema

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
    if error.validator in (
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
    ):
        return (
            path,
            f"{_short(error.instance)} violates {error.validator}={error.validator_value!r}",
        )
    if error.validator in ("oneOf", "anyOf") and error.context:
        from jsonschema.exceptions import best_match

        best = best_match(error.context)
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
