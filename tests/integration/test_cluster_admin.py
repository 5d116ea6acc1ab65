"""Instructor operations on the fake API server: preflight, participants, reset from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakekube import FakeKube
from fakekube.lab_objects import PART_OF, lab_objects

from labutils.cli import main
from labutils.config import LabConfig
from labutils.errors import ManifestError
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
        checks = _checks(preflight(kube.write_kubeconfig(), config=CONFIG, cache_dir=tmp_path))
    assert all(ok for ok, _, _ in checks.values()), checks
    assert "v1.33" in checks["API server"][1]
    assert checks["GPU nodes in us-west-2a"][1] == "1 nodes, 8 nvidia.com/gpu allocatable"
    assert "quota 8" in checks["namespace vllm-lab GPU quota"][1]


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
        "AWS Load Balancer Controller",
        "GPU nodes in us-west-2b",
        "namespace vllm-lab GPU quota",
    }
    assert checks["autoscaling metrics (KEDA or custom metrics API)"][0]  # KEDA is there
    assert "kubernetes-sigs/lws" in checks["CRD LeaderWorkerSet"][2]
    assert "helm install aws-load-balancer-controller" in checks["AWS Load Balancer Controller"][2]
    assert "Karpenter" in checks["GPU nodes in us-west-2b"][2]
    assert "lab needs 8" in checks["namespace vllm-lab GPU quota"][1]


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


def _rendered_rbac(folder: Path) -> Path:
    (folder / "cluster").mkdir(parents=True)
    docs = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "lab-participant", "namespace": "vllm-lab", "labels": PART_OF},
            "rules": [
                {
                    "apiGroups": ["leaderworkerset.x-k8s.io"],
                    "resources": ["leaderworkersets", "leaderworkersets/scale"],
                    "verbs": ["get", "list", "patch", "create", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lab-participant", "namespace": "vllm-lab", "labels": PART_OF},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "lab-participant",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vllm-lab"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpu", "namespace": "vllm-lab", "labels": PART_OF},
            "spec": {"hard": {"requests.nvidia.com/gpu": "8"}},
        },
    ]
    (folder / "cluster" / "rbac.yaml").write_text(yaml.safe_dump_all(docs))
    return folder


def test_participants_create_reset_all_and_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = _rendered_rbac(tmp_path / "rendered")
    with FakeKube(tmp_path, zones=CONFIG.zones) as kube:
        kubeconfig = str(kube.write_kubeconfig())
        assert main(["participants", "create", "2", "--rendered", str(rendered),
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        conn = connect(kubeconfig, cache_dir=tmp_path)
        again = create_participants(conn, 2, rendered)  # idempotent: apply again
        assert len(again) == 2 * 4
        for ns in ("vllm-lab-p01", "vllm-lab-p02"):
            binding = kube.get("rbac.authorization.k8s.io", "rolebindings", ns, "lab-participant")
            assert binding is not None and binding["subjects"][0]["namespace"] == ns
            quota = kube.get("", "resourcequotas", ns, "gpu")
            assert quota is not None and quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "8"
        # each participant deploys the lab into their namespace
        for ns in ("vllm-lab-p01", "vllm-lab-p02"):
            EksBackend(kubeconfig, namespace=ns, config=CONFIG, poll_s=0.05,
                       cache_dir=tmp_path).apply(objects=lab_objects(CONFIG.zones)[1:],
                                                 timeout_s=20)  # fmt: skip
        capsys.readouterr()

        assert main(["reset", "--target", "eks", "--all-participants",
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert "vllm-lab-p01" in out and "would delete" in out
        for ns in ("vllm-lab-p01", "vllm-lab-p02"):  # the dry run deleted nothing
            assert len(kube.names("leaderworkerset.x-k8s.io", "leaderworkersets", ns)) == 2

        assert main(["reset", "--target", "eks", "--all-participants", "--yes",
                     "--kubeconfig", kubeconfig]) == 0  # fmt: skip
        assert kube.names("leaderworkerset.x-k8s.io", "leaderworkersets") == set()
        assert kube.get("", "resourcequotas", "vllm-lab-p01", "gpu") is not None

        assert main(["participants", "delete", "--kubeconfig", kubeconfig]) == 0
        assert "would delete" in capsys.readouterr().out
        assert main(["participants", "delete", "--yes", "--kubeconfig", kubeconfig]) == 0
        assert not {"vllm-lab-p01", "vllm-lab-p02"} & kube.names("", "namespaces")
        assert kube.names("", "resourcequotas") == set()
        assert {"default", "kube-system"} <= kube.names("", "namespaces")


def test_participants_without_rendered_rbac_says_what_file(tmp_path: Path) -> None:
    with FakeKube(tmp_path) as kube:
        conn = connect(kube.write_kubeconfig(), cache_dir=tmp_path)
        with pytest.raises(ManifestError, match=r"cluster/rbac\.yaml.*labctl render --out"):
            create_participants(conn, 1, tmp_path / "rendered")


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
