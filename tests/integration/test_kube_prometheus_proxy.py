"""PromQL on the ``eks`` target: the real ``kubernetes`` client reaches a real Prometheus
through the fake API server's service proxy (``monitoring/prometheus-operated:web``), as it
reaches kube-prometheus-stack's on EKS; refusals name the query, the URL and the fix."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKube

from labutils.config import LabConfig
from labutils.errors import MetricsError
from labutils.metrics import prometheus as prom
from labutils.targets.eks import EksBackend
from labutils.targets.eks.prometheus import ServiceProxyPrometheus
from labutils.targets.twin.ports import free_ports
from labutils.targets.twin.prometheus import prometheus_binary


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bare Prometheus on 127.0.0.1 scraping itself every 0.5 s (the proxy's upstream)."""
    root = tmp_path_factory.mktemp("prom")
    port = free_ports(1)[0]
    (root / "prometheus.yml").write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 500ms}\n"
        "scrape_configs: [{job_name: self, static_configs: [{targets: ['127.0.0.1:"
        + str(port)
        + "']}]}]\n"
    )
    proc = subprocess.Popen(
        [prometheus_binary(), f"--config.file={root / 'prometheus.yml'}",
         f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # ready, and the first scrape stored (discovery hands targets on every 5 s)
            try:
                with urllib.request.urlopen(f"{url}/api/v1/query?query=up", timeout=2) as r:
                    if b'"value"' in r.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not scrape itself in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
def kube(tmp_path: Path, prometheus_url: str) -> Iterator[FakeKube]:
    with FakeKube(tmp_path, proxy_upstream=prometheus_url) as server:
        server.put("", "namespaces", "", {"metadata": {"name": "monitoring"}})
        yield server


def _service(kube: FakeKube) -> None:
    kube.put("", "services", "monitoring", {
        "metadata": {"name": "prometheus-operated"},
        "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 9090}]},
    })  # fmt: skip


def _backend(kube: FakeKube) -> EksBackend:
    return EksBackend(kube.write_kubeconfig(), config=LabConfig(), poll_s=0.05)


def test_promql_through_the_api_server_service_proxy(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAB_PROMETHEUS_URL", raising=False)
    _service(kube)
    backend = _backend(kube)
    api = backend.prometheus()
    assert isinstance(api, ServiceProxyPrometheus)
    assert api.url == (
        f"{kube.url}/api/v1/namespaces/monitoring/services/prometheus-operated:web/proxy"
    )
    frame = prom.query(backend, 'up{job="self"}')
    assert frame[["job", "value"]].to_dict("records") == [{"job": "self", "value": 1.0}]
    now = time.time()
    series = prom.query_range(backend, 'up{job="self"}', start_s=now - 2, end_s=now, step_s=0.5)
    assert not series.empty and set(series["value"]) == {1.0}
    assert series["time_s"].between(now - 2.001, now + 0.001).all()
    assert ("GET", "/api/v1/namespaces/monitoring/services/prometheus-operated:web/proxy/"
            "api/v1/query") in kube.requests  # fmt: skip


def test_a_refused_query_names_query_and_proxy_url(kube: FakeKube) -> None:
    _service(kube)
    backend = _backend(kube)
    with pytest.raises(MetricsError, match=r"prometheus-operated:web/proxy refused 'sum\(up': "
                                           r"bad_data: .*parse error"):  # fmt: skip
        prom.query(backend, "sum(up")


def test_missing_prometheus_and_missing_rbac_say_what_to_do(kube: FakeKube) -> None:
    backend = _backend(kube)
    with pytest.raises(MetricsError, match=r"HTTP 404 .*kube-prometheus-stack installed"):
        prom.query(backend, "up")
    _service(kube)
    kube.forbid.add(("get", "services/proxy"))
    with pytest.raises(MetricsError, match=r"HTTP 403 .*'get' on services/proxy in namespace "
                                           r"monitoring"):  # fmt: skip
        prom.query(backend, "up")


def test_lab_prometheus_url_wins(
    kube: FakeKube, prometheus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_PROMETHEUS_URL", prometheus_url)
    backend = _backend(kube)
    assert backend.prometheus().url == prometheus_url
    assert not prom.query(backend, 'up{job="self"}').empty
