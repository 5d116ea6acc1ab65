"""Instructor operations on the fake API server: preflight, participants, reset from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakekube import FakeKube
from fakekube.lab_objects import install_addons, lab_objects, lab_secrets

from labutils.cli import main
from labutils.config import LabConfig
from labutils.errors import ConfigError
from labutils.targets.eks import EksBackend, connect, create_participants, preflight

CONFIG = LabConfig(
    zones=("us-west-2a", "us-west-2b"),
    replicas=1,
    tensor_parallel_size=4,
    pipeline_parallel_size=1,
)


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the CLI caches discovery in the user cache dir; keep it inside the test
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _checks(frame: object) -> dict[str, tuple[bool, str, str]]:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    return {r.check: (bool(r.ok), str(r.detail), str(r.fix)) for r in frame.itertuples()}


def test_preflight_on_a_ready_cluster(tmp_path: Path) -> None:
    with FakeKube(tmp_path, zones=CONFIG.zones) as kube:
        kube.put("", "namespaces", "", {"metadata": {"name": "vllm-lab"}})
        kube.put(
            "",
            "resourcequotas",
            "vllm-lab",
            {"metadata": {"name": "gpu"}, "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}},
        )
        install_addons(kube)
        lab_secrets(kube)
        checks = _checks(preflight(kube.write_kubeconfig(), config=CONFIG, cache_dir=tmp_path))
    assert all(ok for ok, _, _ in checks.values()), checks
    assert "v1.33" in checks["API server"][1]
    assert checks["GPU capacity in us-west-2a"][1] == "1 nodes, 8 nvidia.com/gpu allocatable"
    assert "Accepted=True" in checks["GatewayClass eg"][1]
    assert checks["StorageClass efs-sc"][1] == "provisioner efs.csi.aws.com"
    assert "vllm-api-key, hf-token present" in checks["Secrets in vllm-lab"][1]
    assert "quota 8" in checks["namespace vllm-lab GPU quota"][1]


def test_preflight_passes_on_a_karpenter_cluster_without_gpu_nodes(tmp_path: Path) -> None:
    # Karpenter launches GPU nodes when the first group is scheduled: none exist before.
    with FakeKube(tmp_path, zones=()) as kube:
        kube.put("", "namespaces", "", {"metadata": {"name": "vllm-lab"}})
        install_addons(kube, nodepool_zones=CONFIG.zones)
        lab_secrets(kube)
        checks = _checks(preflight(kube.write_kubeconfig(), config=CONFIG, cache_dir=tmp_path))
    assert all(ok for ok, _, _ in checks.values()), checks
    detail = checks["GPU capacity in us-west-2b"][1]
    assert detail.startswith("0 nodes") and "vllm-gpu-us-west-2b launches more on demand" in detail
    assert "0/0 ready" in checks["NVIDIA device plugin"][1]  # no GPU node yet: nothing to run


def test_preflight_reports_each_gap_with_a_fix(tmp_path: Path) -> None:
    with FakeKube(
        tmp_path, zones=("us-west-2a",), crds=["keda.sh"], aws_lb_controller=False
    ) as kube:
        kube.put("", "namespaces", "", {"metadata": {"name": "vllm-lab"}})
        kube.put(
            "",
            "resourcequotas",
            "vllm-lab",
            {"metadata": {"name": "gpu"}, "spec": {"hard": {"requests.nvidia.com/gpu": "4"}}},
        )
        checks = _checks(preflight(kube.write_kubeconfig(), config=CONFIG, cache_dir=tmp_path))
    failed = {name for name, (ok, _, _) in checks.items() if not ok}
    assert failed == {
        "CRD LeaderWorkerSet",
        "CRD Gateway API Gateway",
        "CRD Gateway API HTTPRoute",
        "CRD Envoy Gateway BackendTrafficPolicy",
        "CRD prometheus-operator PodMonitor",
        "GatewayClass eg",
        "StorageClass efs-sc",
        "NVIDIA device plugin",
        "AWS Load Balancer Controller",
        "GPU capacity in us-west-2b",
        "Secrets in vllm-lab",
        "namespace vllm-lab GPU quota",
    }
    assert checks["autoscaling metrics (KEDA or custom metrics API)"][0]  # KEDA is there
    for name in failed:
        assert checks[name][2], f"{name} has no fix"
    assert "labctl instructor addons" in checks["CRD LeaderWorkerSet"][2]
    assert "Envoy Gateway's Helm chart creates none" in checks["GatewayClass eg"][2]
    assert "Karpenter NodePool" in checks["GPU capacity in us-west-2b"][2]
    assert "missing: vllm-api-key (absent), hf-token (absent)" in checks["Secrets in vllm-lab"][1]
    assert "lab needs 8" in checks["namespace vllm-lab GPU quota"][1]


def test_preflight_names_a_gateway_class_its_controller_refused(tmp_path: Path) -> None:
    with FakeKube(tmp_path, zones=CONFIG.zones) as kube:
        install_addons(kube, accepted=False)
        checks = _checks(preflight(kube.write_kubeconfig(), config=CONFIG, cache_dir=tmp_path))
    ok, detail, fix = checks["GatewayClass eg"]
    assert not ok and "Accepted=False (EnvoyProxy not found)" in detail and "EnvoyProxy" in fix


def test_preflight_cli_prints_the_table_and_fails_on_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeKube(tmp_path, zones=("us-west-2a",), aws_lb_controller=False) as kube:
        code = main(["preflight", "--target", "eks", "--kubeconfig", str(kube.write_kubeconfig())])
    out = capsys.readouterr().out
    assert code == 1
    assert "AWS Load Balancer Controller" in out and "not installed" in out
    assert "CRD LeaderWorkerSet" in out


def test_preflight_unreachable_is_a_failed_row(tmp_path: Path) -> None:
    kube = FakeKube(tmp_path)
    kube.start()
    kubeconfig = kube.write_kubeconfig()
    kube.stop()
    checks = _checks(preflight(kubeconfig, config=CONFIG, cache_dir=tmp_path))
    assert list(checks) == ["API server"]
    ok, detail, fix = checks["API server"]
    assert not ok and "unreachable" in detail and fix


def test_participants_create_reset_all_and_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "not-a-real-token")
    out = tmp_path / "handout"
    with FakeKube(tmp_path, zones=CONFIG.zones) as kube:
        kubeconfig = str(kube.write_kubeconfig())
        assert main(["participants", "create", "2", "--out", str(out), "--hours", "4",
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert "skipped: set participants.jupyter_image" in printed
        conn = connect(kubeconfig, cache_dir=tmp_path)
        again = create_participants(conn, 2, out_dir=out)  # idempotent: apply again
        assert {"p01", "p02"} <= set(again["namespace"])
        # shared fleet (lab.yaml's default profile): each participant may watch the fleet
        viewer = kube.get("rbac.authorization.k8s.io", "rolebindings", "vllm-lab",
                          "lab-fleet-viewer-p01")  # fmt: skip
        assert viewer is not None and viewer["roleRef"]["name"] == "lab-fleet-viewer"
        for ns in ("p01", "p02"):
            binding = kube.get("rbac.authorization.k8s.io", "rolebindings", ns, "lab-participant")
            assert binding is not None
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": "lab-participant", "namespace": ns}
            ]  # one subject, no shared group
            quota = kube.get("", "resourcequotas", ns, "vllm-lab-gpu")
            assert quota is not None
            assert kube.get("", "secrets", ns, "vllm-api-key") is not None
            handed = yaml.safe_load((out / ns / "kubeconfig").read_text())
            assert handed["contexts"][0]["context"]["namespace"] == ns
        keys = {kube.get("", "secrets", ns, "vllm-api-key")["data"]["api-key"]  # type: ignore[index]
                for ns in ("p01", "p02")}  # fmt: skip
        assert len(keys) == 2  # one API key per participant
        # each participant deploys the lab into their namespace with their own kubeconfig
        for ns in ("p01", "p02"):
            participant = EksBackend(out / ns / "kubeconfig", config=CONFIG, poll_s=0.05,
                                     cache_dir=tmp_path / ns)  # fmt: skip
            assert participant.namespace == ns
            participant.apply(objects=lab_objects(CONFIG.zones)[1:], timeout_s=20)
        capsys.readouterr()

        assert main(["reset", "--target", "eks", "--all-participants",
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        text = capsys.readouterr().out
        assert "p01" in text and "would delete" in text
        for ns in ("p01", "p02"):  # the dry run deleted nothing
            assert len(kube.names("leaderworkerset.x-k8s.io", "leaderworkersets", ns)) == 2

        assert main(["reset", "--target", "eks", "--all-participants", "--yes",
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        assert kube.names("leaderworkerset.x-k8s.io", "leaderworkersets") == set()
        assert kube.get("", "resourcequotas", "p01", "vllm-lab-gpu") is not None

        assert main(["participants", "delete", "--kubeconfig", kubeconfig]) == 0
        assert "would delete" in capsys.readouterr().out
        assert main(["participants", "delete", "--yes", "--out", str(out),
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        assert not {"p01", "p02"} & kube.names("", "namespaces")
        assert kube.names("", "resourcequotas") == set()
        assert {"default", "kube-system"} <= kube.names("", "namespaces")
        assert not (out / "p01").exists()


def test_participant_preflight_reads_only_what_it_may(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_NAMESPACE", "vllm-lab")  # the shared fleet, as their JupyterLab sets
    with FakeKube(tmp_path, zones=CONFIG.zones) as kube:
        conn = connect(kube.write_kubeconfig(), cache_dir=tmp_path)
        create_participants(conn, 1, out_dir=tmp_path / "out", hf_token="not-a-real-token")
        kube.denials.clear()
        checks = _checks(preflight(tmp_path / "out" / "p01" / "kubeconfig", config=CONFIG,
                                   cache_dir=tmp_path / "p"))  # fmt: skip
        assert kube.denials == []
    assert all(ok for ok, _, _ in checks.values()), checks
    assert "as participant (namespace p01)" in checks["API server"][1]
    assert "instructor's preflight" in checks["GatewayClass"][1]
    assert "shared fleet in vllm-lab" in checks["namespace p01 GPU quota"][1]


def test_participants_count_out_of_range_says_so(tmp_path: Path) -> None:
    with FakeKube(tmp_path) as kube:
        conn = connect(kube.write_kubeconfig(), cache_dir=tmp_path)
        with pytest.raises(ConfigError, match=r"within 1\.\.99"):
            create_participants(conn, 0, out_dir=tmp_path / "out")


def test_reset_local_on_an_empty_state_dir_is_a_harmless_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing was started in this state dir: the dry run and the real reset both say so, exit 0
    # and leave the folder as it was (an instructor may run the reset twice).
    state = tmp_path / "state"
    state.mkdir()
    assert main(["reset", "--target", "local", "--state-dir", str(state)]) == 0
    assert main(["reset", "--target", "local", "--state-dir", str(state), "--yes"]) == 0
    assert main(["reset", "--target", "local", "--state-dir", str(state), "--yes"]) == 0
    out = capsys.readouterr().out
    assert out.count("local twin: nothing to reset") == 3
    # only the (empty) logs folder the backend makes for the processes it would start
    assert [p.name for p in state.iterdir()] in ([], ["logs"])
    assert not any((state / "logs").iterdir()) if (state / "logs").exists() else True
