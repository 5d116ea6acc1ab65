"""The fake API server answers like a real one where the lab depends on it (typed client)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKube
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def core(tmp_path: Path) -> Iterator[tuple[FakeKube, client.CoreV1Api]]:
    with FakeKube(tmp_path) as kube:
        api_client = config.new_client_from_config(str(kube.write_kubeconfig()))
        yield kube, client.CoreV1Api(api_client)


def _status(exc: ApiException) -> dict[str, object]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["code"] == exc.status
    return body


def _cm(name: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": labels or {}}}


def test_status_bodies_for_404_409_422(core: tuple[FakeKube, client.CoreV1Api]) -> None:
    _, api = core
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_config_map("nope", "default")
    assert _status(missing.value)["reason"] == "NotFound"
    api.create_namespaced_config_map("default", _cm("one"))
    with pytest.raises(ApiException) as dup:
        api.create_namespaced_config_map("default", _cm("one"))
    assert _status(dup.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as bad:
        api.create_namespaced_config_map("default", _cm("Not_Valid"))
    assert _status(bad.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as no_ns:
        api.create_namespaced_config_map("ghost", _cm("one"))
    assert no_ns.value.status == 404


def test_stale_resource_version_is_a_conflict(core: tuple[FakeKube, client.CoreV1Api]) -> None:
    _, api = core
    created = api.create_namespaced_config_map("default", _cm("cfg"))
    api.patch_namespaced_config_map("cfg", "default", {"data": {"a": "1"}})
    stale = {"metadata": {"name": "cfg", "resourceVersion": created.metadata.resource_version}}
    with pytest.raises(ApiException) as info:
        api.replace_namespaced_config_map("cfg", "default", stale)
    assert _status(info.value)["reason"] == "Conflict"


def test_label_selectors_equality_and_set_based(core: tuple[FakeKube, client.CoreV1Api]) -> None:
    _, api = core
    for name, zone in (("a", "us-west-2a"), ("b", "us-west-2b"), ("c", "eu-west-1a")):
        api.create_namespaced_config_map("default", _cm(name, {"zone": zone, "lab": "yes"}))
    api.create_namespaced_config_map("default", _cm("d"))

    def names(selector: str) -> list[str]:
        items = api.list_namespaced_config_map("default", label_selector=selector).items
        return sorted(i.metadata.name for i in items)

    assert names("zone=us-west-2a") == ["a"]
    assert names("zone!=us-west-2a") == ["b", "c", "d"]
    assert names("zone in (us-west-2a,us-west-2b)") == ["a", "b"]
    assert names("lab,zone notin (eu-west-1a)") == ["a", "b"]
    assert names("!lab") == ["d"]


def test_namespace_deletion_terminates_then_removes_contents(tmp_path: Path) -> None:
    with FakeKube(tmp_path, terminate_delay_s=1.0) as kube:
        api = client.CoreV1Api(config.new_client_from_config(str(kube.write_kubeconfig())))
        _terminate_namespace(kube, api)


def _terminate_namespace(kube: FakeKube, api: client.CoreV1Api) -> None:
    api.create_namespace({"metadata": {"name": "team"}})
    api.create_namespaced_config_map("team", _cm("x"))
    api.delete_namespace("team")
    namespace = kube.get("", "namespaces", "", "team")
    assert namespace is not None and namespace["status"]["phase"] == "Terminating"
    with pytest.raises(ApiException) as info:
        api.create_namespaced_config_map("team", _cm("y"))
    assert info.value.status == 403
    deadline = time.monotonic() + 10
    while "team" in kube.names("", "namespaces") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "team" not in kube.names("", "namespaces")
    assert kube.names("", "configmaps", "team") == set()


def test_unauthenticated_requests_get_401(tmp_path: Path) -> None:
    with FakeKube(tmp_path) as kube:
        configuration = client.Configuration()
        configuration.host = kube.url
        api = client.CoreV1Api(client.ApiClient(configuration))
        with pytest.raises(ApiException) as info:
            api.list_namespace()
    assert info.value.status == 401
