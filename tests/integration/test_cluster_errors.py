"""Each expected EKS failure is one line that names the thing and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakekube import FakeKube
from fakekube.lab_objects import lab_objects

from labutils.cli import main
from labutils.config import LabConfig
from labutils.errors import ClusterError, LabError, WaitTimeout
from labutils.targets.eks import EksBackend


def _backend(kubeconfig: Path, tmp_path: Path, **kwargs: object) -> EksBackend:
    return EksBackend(
        kubeconfig,
        config=LabConfig(zones=("us-west-2a",)),
        poll_s=0.05,
        cache_dir=tmp_path / "discovery",
        **kwargs,  # type: ignore[arg-type]
    )


def _one_line(exc: LabError) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


def test_wrong_context_names_the_valid_ones(tmp_path: Path) -> None:
    with FakeKube(tmp_path) as kube:
        kubeconfig = kube.write_kubeconfig(context="lab-admin")
        with pytest.raises(ClusterError) as info:
            _backend(kubeconfig, tmp_path, context="prod")
    text = _one_line(info.value)
    assert "'prod'" in text and str(kubeconfig) in text and "choose one of: lab-admin" in text


def test_missing_kubeconfig_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ClusterError) as info:
        _backend(tmp_path / "nope.yaml", tmp_path)
    assert "aws eks update-kubeconfig" in _one_line(info.value)


def test_unreachable_api_server(tmp_path: Path) -> None:
    kube = FakeKube(tmp_path)
    kube.start()
    kubeconfig = kube.write_kubeconfig()
    url = kube.url
    kube.stop()  # the port is closed now: connection refused
    backend = _backend(kubeconfig, tmp_path)  # connecting is lazy: no request yet
    with pytest.raises(ClusterError) as info:
        backend.status()
    text = _one_line(info.value)
    assert url in text and "unreachable" in text and "--context fake" in text


def test_missing_crd_names_the_kind_and_how_to_install(tmp_path: Path) -> None:
    with FakeKube(tmp_path, crds=["gateway.networking.k8s.io"]) as kube:
        backend = _backend(kube.write_kubeconfig(), tmp_path)
        with pytest.raises(ClusterError) as info:
            backend.apply(objects=lab_objects(("us-west-2a",)), wait=False)
    text = _one_line(info.value)
    assert "LeaderWorkerSet (leaderworkerset.x-k8s.io/v1)" in text
    assert "labctl instructor addons" in text


def test_forbidden_names_the_object_and_who_to_ask(tmp_path: Path) -> None:
    with FakeKube(tmp_path) as kube:
        kube.forbid.add(("patch", "leaderworkersets"))
        backend = _backend(kube.write_kubeconfig(), tmp_path)
        with pytest.raises(ClusterError) as info:
            backend.apply(objects=lab_objects(("us-west-2a",)), wait=False)
        # objects before the LWS went through; nothing after it was attempted
        assert kube.names("", "services", "vllm-lab") == {"vllm-us-west-2a-api"}
        assert kube.names("autoscaling", "horizontalpodautoscalers") == set()
    text = _one_line(info.value)
    assert "apply LeaderWorkerSet vllm-lab/vllm-us-west-2a" in text
    assert "forbidden" in text and "labctl participants create" in text


def test_wait_timeout_names_lws_conditions_and_events(tmp_path: Path) -> None:
    # no GPU node in us-west-2c: its pods stay Pending, as on a cluster without capacity there
    with FakeKube(tmp_path, zones=("us-west-2a",)) as kube:
        backend = _backend(kube.write_kubeconfig(), tmp_path)
        with pytest.raises(WaitTimeout) as info:
            backend.apply(objects=lab_objects(("us-west-2a", "us-west-2c")), timeout_s=1.0)
        status = backend.status().set_index("lws")
    text = _one_line(info.value)
    assert "LeaderWorkerSet vllm-lab/vllm-us-west-2c not Available after 1 s" in text
    assert "waiting for a GPU node" in text  # the phase the group is stuck in
    assert "Available=False" in text and "FailedScheduling" in text
    assert "labctl preflight" in text
    assert bool(status.loc["vllm-us-west-2a", "available"])
    assert not bool(status.loc["vllm-us-west-2c", "available"])


def test_scale_errors(tmp_path: Path) -> None:
    with FakeKube(tmp_path) as kube:
        backend = _backend(kube.write_kubeconfig(), tmp_path)
        backend.apply(objects=lab_objects(("us-west-2a",)), timeout_s=20)
        with pytest.raises(ClusterError) as missing:
            backend.scale("vllm-eu-west-1a", 2)
        with pytest.raises(ClusterError) as invalid:
            backend.scale("vllm-us-west-2a", -1)
    assert "choose one of: vllm-us-west-2a" in _one_line(missing.value)
    assert "invalid" in _one_line(invalid.value) and "spec.replicas" in str(invalid.value)


def test_cli_prints_one_line_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKube(tmp_path) as kube:
        kubeconfig = kube.write_kubeconfig()
        code = main(
            ["reset", "--target", "eks", "--kubeconfig", str(kubeconfig), "--context", "nope"]
        )
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.count("\n") == 0 and err.startswith("labctl reset: error: context 'nope'")


def test_failed_scrape_is_an_error_with_a_warning_not_empty_data(tmp_path: Path) -> None:
    with FakeKube(tmp_path, proxy_upstream=None) as kube:  # the leader does not answer
        backend = _backend(kube.write_kubeconfig(), tmp_path)
        backend.apply(objects=lab_objects(("us-west-2a",)), timeout_s=20)
        with pytest.warns(UserWarning, match="metrics scrape failed"):
            scrapes = backend.scrape_metrics()
    assert [s.group for s in scrapes] == ["vllm-us-west-2a-0"]
    assert scrapes[0].text == ""
    assert scrapes[0].error and "pods/vllm-us-west-2a-0:8000/proxy/metrics" in scrapes[0].error


def test_hung_api_server_times_out_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import time

    from labutils.targets.eks import _connect

    monkeypatch.setattr(_connect, "REQUEST_TIMEOUT_S", (1.0, 0.3))
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            f"apiVersion: v1\nkind: Config\ncurrent-context: hung\n"
            f"clusters: [{{name: hung, cluster: {{server: '{url}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: hung, context: {cluster: hung, user: u}}]\n"
        )
        backend = _backend(kubeconfig, tmp_path)
        started = time.monotonic()
        with pytest.raises(ClusterError) as info:
            backend.status()
        elapsed_s = time.monotonic() - started
    assert elapsed_s < 30  # bounded by the request timeout, not the OS (minutes)
    text = _one_line(info.value)
    assert url in text and "timed out" in text
