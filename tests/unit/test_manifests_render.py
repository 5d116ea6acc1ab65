"""`labctl render` output: contract layout and names, config applied, clean validation;
the loader's file:line bookkeeping."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from labutils.cli import main
from labutils.config import load_config, manifests_dir
from labutils.errors import ConfigError, ManifestError
from labutils.manifests import load_objects, render, validate
from labutils.vllm_args import parse_vllm_serve

ZONES = ("us-west-2a", "us-west-2b", "us-west-2c")


def _rel(files: list[Path], root: Path) -> set[str]:
    return {str(f.relative_to(root)) for f in files}


def test_render_layout_matches_the_contract(tmp_path: Path) -> None:
    files = render(out_dir=tmp_path)
    expected = {
        "cluster/namespace.yaml",
        "cluster/secrets.yaml",
        "cluster/quota.yaml",
        "cluster/fleet-viewer.yaml",
        "cluster/networkpolicy.yaml",
        "gateway/gateway.yaml",
        "gateway/httproute.yaml",
        "gateway/backendtrafficpolicy.yaml",
        "monitoring/podmonitor.yaml",
        "monitoring/prometheus-adapter-rules.yaml",
    }
    for zone in ZONES:
        expected |= {
            f"zones/{zone}/{n}.yaml" for n in ("lws", "service", "hpa", "karpenter", "prestage")
        }
        expected |= {f"zones/{zone}/storage.yaml", f"optional/keda/scaledobject-{zone}.yaml"}
    assert _rel(files, tmp_path) == expected


def test_render_then_validate_via_cli_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--out", str(tmp_path)]) == 0
    assert main(["validate", str(tmp_path)]) == 0
    assert "manifests are valid" in capsys.readouterr().out


def test_source_manifests_validate_clean() -> None:
    assert validate(manifests_dir()) == []


def test_contract_names_and_labels(tmp_path: Path) -> None:
    render(out_dir=tmp_path)
    objs = load_objects(tmp_path)
    assert all(o.labels.get("app.kubernetes.io/part-of") == "vllm-lws-lab" for o in objs)
    names = {(o.kind, o.name) for o in objs}
    for zone in ZONES:
        assert {
            ("LeaderWorkerSet", f"vllm-{zone}"),
            ("Service", f"vllm-{zone}-api"),
            ("HorizontalPodAutoscaler", f"vllm-{zone}"),
        } <= names
    assert {("HTTPRoute", "vllm"), ("Gateway", "vllm-gateway")} <= names
    for obj in objs:
        if "zones" in obj.file.parts:
            assert obj.labels["vllm-lws-lab.io/zone"] == obj.file.parent.name


def test_rendered_files_are_plain_yaml_objects(tmp_path: Path) -> None:
    for file in render(out_dir=tmp_path):
        text = file.read_text()
        assert "{{" not in text and "$(LWS_" not in text.replace("$(LWS_GROUP_SIZE)", "").replace(
            "$(LWS_LEADER_ADDRESS)", ""
        ).replace("$(LWS_WORKER_INDEX)", "")
        for doc in yaml.safe_load_all(text):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_render_is_deterministic(tmp_path: Path) -> None:
    a = {f.relative_to(tmp_path / "a"): f.read_bytes() for f in render(out_dir=tmp_path / "a")}
    b = {f.relative_to(tmp_path / "b"): f.read_bytes() for f in render(out_dir=tmp_path / "b")}
    assert a == b


def test_config_drives_the_rendering(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        load_config(),
        zones=("eu-west-1a", "eu-west-1b"),
        namespace="lab-team7",
        replicas=3,
        max_replicas=5,
        instance_type="g6e.12xlarge",
        route_weights={"eu-west-1a": 70, "eu-west-1b": 30},
    )
    render(cfg, tmp_path)
    assert validate(tmp_path) == []
    objs = load_objects(tmp_path)
    namespaced = [o for o in objs if o.namespace is not None]
    assert {o.namespace for o in namespaced} == {"lab-team7"}  # never another namespace
    (route,) = [o for o in objs if o.kind == "HTTPRoute"]
    weights = {r["name"]: r["weight"] for r in route.data["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"vllm-eu-west-1a-api": 70, "vllm-eu-west-1b-api": 30}
    lws = next(o for o in objs if o.kind == "LeaderWorkerSet" and o.name == "vllm-eu-west-1b")
    assert lws.data["spec"]["replicas"] == 3
    leader = lws.data["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    assert leader["nodeSelector"]["node.kubernetes.io/instance-type"] == "g6e.12xlarge"
    assert leader["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"][0]["values"] == ["eu-west-1b"]
    quota = next(o for o in objs if o.kind == "ResourceQuota")
    assert quota.data["spec"]["hard"]["requests.nvidia.com/gpu"] == str(2 * 5 * 2 * 4)
    keda = [o for o in objs if o.kind == "ScaledObject"]
    assert all(
        'namespace="lab-team7"' in o.data["spec"]["triggers"][0]["metadata"]["query"] for o in keda
    )


def test_smaller_model_single_node_groups(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        load_config(),
        model="meta-llama/Llama-3.1-8B-Instruct",
        served_model_name="llama-3.1-8b",
        instance_type="g5.xlarge",
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
    )
    render(cfg, tmp_path)
    (lws,) = [o for o in load_objects(tmp_path / "zones/us-west-2a") if o.kind == "LeaderWorkerSet"]
    tmpl = lws.data["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 1
    container = tmpl["leaderTemplate"]["spec"]["containers"][0]
    args = parse_vllm_serve(container["command"] + container["args"])
    assert (args.model, args.tensor_parallel_size, args.pipeline_parallel_size) == (
        "meta-llama/Llama-3.1-8B-Instruct",
        1,
        1,
    )
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert validate(tmp_path) == []


def test_rerender_drops_stale_zones_and_keeps_foreign_files(tmp_path: Path) -> None:
    render(out_dir=tmp_path)
    (tmp_path / "zones" / "notes.yaml").write_text("mine: true\n")
    render(dataclasses.replace(load_config(), zones=("us-west-2a",)), tmp_path)
    assert not list((tmp_path / "zones" / "us-west-2c").glob("*.yaml"))
    assert (tmp_path / "zones" / "notes.yaml").read_text() == "mine: true\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tensor_parallel_size": 8}, "g5.12xlarge has 4 GPUs"),
        ({"route_weights": {z: 0 for z in ZONES}}, "all 0"),
        ({"route_weights": {"us-west-2a": 2_000_000}}, "0..1000000"),
        ({"instance_type": "m5.large"}, "unknown instance type"),
        ({"min_replicas": 3, "replicas": 2}, "min_replicas <= replicas"),
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(dataclasses.replace(load_config(), **change), tmp_path)


def test_cli_render_bad_config_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("tensor_parallel_size: 16\n")
    assert main(["render", "--out", str(tmp_path / "out"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensor_parallel_size=16" in err[0]


def test_cli_validate_missing_path_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file or folder" in err[0]


def test_loader_records_field_lines(tmp_path: Path) -> None:
    file = tmp_path / "two.yaml"
    file.write_text(
        "# comment\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: a\n"
        "data:\n"
        "  k: v\n"
        "---\n"
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        "  name: b\n"
        "spec:\n"
        "  ports:\n"
        "    - port: 80\n"
        "      targetPort: 8000\n"
    )
    first, second = load_objects(file)
    assert (first.line, first.line_of(("data", "k"))) == (2, 7)
    assert second.line == 9
    assert second.line_of(("spec", "ports", 0, "targetPort")) == 16
    # a missing field points at its closest written parent
    assert second.line_of(("spec", "ports", 0, "name")) == 15
    assert second.get("spec", "ports", 0, "port") == 80


def test_loader_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n")
    with pytest.raises(ManifestError, match=rf"{file}:\d+: not valid YAML"):
        load_objects(file)
