"""Reading rendered manifests for apply, and the fake API server's selector/field helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakekube.server import _from_fields_v1, _to_fields_v1, selector_matches

from labutils.errors import ManifestError
from labutils.kube.objects import apply_order, load_rendered


def _write(path: Path, *docs: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))


def test_load_rendered_orders_defaults_namespace_and_skips_optional(tmp_path: Path) -> None:
    _write(
        tmp_path / "zones" / "us-west-2a" / "lws.yaml",
        {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
         "metadata": {"name": "vllm-us-west-2a"}},
    )  # fmt: skip
    _write(
        tmp_path / "cluster" / "namespace.yaml",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vllm-lab"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "filled"},
         "stringData": {"k": "v"}},
    )  # fmt: skip
    _write(
        tmp_path / "optional" / "keda" / "scaledobject-us-west-2a.yaml",
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}},
    )
    objects = load_rendered(tmp_path, namespace="team-a")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "vllm-lab"),
        ("Secret", "filled"),  # the template Secret without values is not applied
        ("LeaderWorkerSet", "vllm-us-west-2a"),
    ]
    assert "namespace" not in objects[0]["metadata"]
    assert objects[2]["metadata"]["namespace"] == "team-a"


def test_load_rendered_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="labctl render --out"):
        load_rendered(tmp_path / "missing", namespace="vllm-lab")
    bad = tmp_path / "zones" / "bad.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("kind: Service\nmetadata: [unclosed\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_rendered(tmp_path, namespace="vllm-lab")


def test_apply_order_puts_dependencies_first_and_is_stable() -> None:
    kinds = ["HTTPRoute", "LeaderWorkerSet", "Service", "Namespace", "Widget", "Service"]
    objects = [{"kind": k, "metadata": {"name": str(i)}} for i, k in enumerate(kinds)]
    ordered = [(o["kind"], o["metadata"]["name"]) for o in apply_order(objects)]
    assert ordered == [("Namespace", "3"), ("Service", "2"), ("Service", "5"),
                       ("LeaderWorkerSet", "1"), ("HTTPRoute", "0"), ("Widget", "4")]  # fmt: skip


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=vllm", True),
        ("app==vllm,tier=gpu", True),
        ("app!=vllm", False),
        ("zone in (us-west-2a, us-west-2b)", True),
        ("zone notin (us-west-2a)", False),
        ("zone notin (eu-west-1a),app", True),
        ("!missing", True),
        ("missing", False),
        ("app=other", False),
    ],
)
def test_fake_label_selectors(selector: str, expected: bool) -> None:
    labels = {"app": "vllm", "tier": "gpu", "zone": "us-west-2a"}
    assert selector_matches(selector, labels) is expected


def test_fake_fields_v1_round_trip() -> None:
    paths = {("spec", "replicas"), ("metadata", "labels", "app"), ("spec", "template")}
    tree = _to_fields_v1(paths)
    assert tree["f:spec"]["f:replicas"] == {}
    assert _from_fields_v1(tree) == paths
