"""The notebooks' EKS path, run as a participant against an API server that enforces RBAC.

An instructor creates the participants (``labctl participants create``); participant p01 then
runs what notebooks 00, 01, 02, 03, 04 and 06 call on ``eks`` with the kubeconfig they were
handed: preflight, render, watched apply, status, groups, first requests, a zone kill (scale to
0 and back), metrics, events, the HPA log, and the verified reset. Every request must be allowed
by the rendered Role (``participant/access.yaml``), and every rule of that Role must be needed
by one of them: the test fails if a rule is removed, or if one is granted that nothing uses.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakekube import FakeKube
from fakekube.engine_stub import engine_stub
from fakekube.rbac import Attributes, rule_allows

from labutils.config import load_config, manifests_dir
from labutils.errors import ClusterError
from labutils.lessons import n00_preflight as preflight
from labutils.lessons import n01_deploy as deploy
from labutils.lessons import n03_monitoring as measure
from labutils.lessons import n04_autoscaling as autoscaling
from labutils.lessons import n06_cleanup as cleanup
from labutils.manifests import plan, render, validate
from labutils.targets import get_backend
from labutils.targets import preflight as target_preflight
from labutils.targets import rollout as rollouts
from labutils.targets.eks import EksBackend, connect
from labutils.targets.eks.participants import create_participants, delete_participants

ZONES = ("us-west-2a", "us-west-2b")
PARTICIPANT = "system:serviceaccount:p01:lab-participant"


def _lab(tmp_path: Path, profile: str = "per-participant") -> Path:
    """A copy of manifests/ whose lab.yaml is a two-zone workshop of ``profile``."""
    source = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), source)
    lab = yaml.safe_load((source / "lab.yaml").read_text())
    lab["zones"] = list(ZONES)
    lab["profile"] = profile
    lab["profiles"]["per-participant"]["zones"] = list(ZONES)
    lab["participants"]["jupyter_image"] = "registry.example/lab/jupyterlab:0.1.0"
    lab["participants"]["count"] = 2
    (source / "lab.yaml").write_text(yaml.safe_dump(lab))
    return source


@pytest.fixture
def kube(tmp_path: Path, data_dir: Path) -> Iterator[FakeKube]:
    with (
        engine_stub(data_dir / "vllm-0.32.0-cpu-metrics.txt") as upstream,
        FakeKube(tmp_path, zones=ZONES, proxy_upstream=upstream, ready_delay_s=0.1) as server,
    ):
        yield server


@pytest.fixture
def workshop(kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two participants created by the instructor; the environment is p01's JupyterLab's."""
    source = _lab(tmp_path)
    admin = connect(kube.write_kubeconfig(tmp_path / "admin"), cache_dir=tmp_path / "d-admin")
    out = tmp_path / "handout"
    created = create_participants(
        admin, 2, out_dir=out, config=load_config(source / "lab.yaml"), source=source,
        hf_token="not-a-real-token",
    )  # fmt: skip
    assert set(created["namespace"]) == {"p01", "p02"}
    assert not kube.denials
    monkeypatch.setenv("LAB_MANIFESTS", str(source))
    monkeypatch.setenv("KUBECONFIG", str(out / "p01" / "kubeconfig"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state" / "twin"))
    monkeypatch.delenv("LAB_NAMESPACE", raising=False)
    return source, out


def _participant_requests(kube: FakeKube) -> list[Attributes]:
    return [a for a in kube.audit if a.user.name == PARTICIPANT]


def _notebook_flow(tmp_path: Path) -> None:
    """What notebooks 00-06 call on eks, in order, with the participant's kubeconfig."""
    config = load_config()
    # 00: preflight and the plan (the plan reads rendered files only)
    checks = target_preflight.preflight("eks", config=config, cache_dir=tmp_path / "d-pre")
    preflight.check_preflight(checks)
    rendered = plan.render_lab(tmp_path / "rendered")
    # 01: deploy, watch, check, first requests, reset
    backend = get_backend("eks", config=config, poll_s=0.05, cache_dir=tmp_path / "d-p01")
    assert isinstance(backend, EksBackend)
    assert (backend.namespace, backend.scope, backend.access) == (
        "p01", "namespace", "api-server proxy"
    )  # fmt: skip
    rollout = rollouts.watch_apply(backend, rendered, timeout_s=30, poll_s=0.05)
    deploy.check_available(backend.status())
    pods = backend.groups()
    deploy.check_group_count(rollout, rendered, pods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no Gateway address on the fake: the zone URL is used
        first = deploy.first_requests(backend, 2, max_tokens=1)
    assert list(first["status"]) == [200, 200]
    # 02: the zone-kill drill on eks scales the zone's LWS to 0 and back
    backend.scale("vllm-us-west-2a", 0)
    backend.scale("vllm-us-west-2a", 1)
    backend.wait_ready(timeout_s=20)
    # 03: fixed-size deployment, server metrics, events
    backend.apply(measure.fixed_size_manifests(tmp_path / "fixed"), timeout_s=20)
    engines = measure.simulated_engines(backend)
    assert len(engines) == len(ZONES)
    assert not backend.events().empty
    # 04: the drill's manifests, the HPA log
    drill = autoscaling.drill_manifests(zones=[ZONES[0]], hpa_time_scale=0.05,
                                        out_dir=tmp_path / "drill")  # fmt: skip
    backend.apply(drill, timeout_s=20)
    log = autoscaling.decisions(backend, hpa=f"vllm-{ZONES[0]}")
    assert set(log["source"]) == {"status"}
    # 06: snapshot, reset, verified clean
    before = cleanup.snapshot(backend)
    backend.reset(yes=True, timeout_s=20)
    verified = cleanup.check_clean(cleanup.verify_clean(backend, before), before)
    assert set(verified["now"]) == {"deleted"}


def _role_rules(source: Path) -> list[dict[str, Any]]:
    out = Path(source).parent / "role-render"
    render(load_config(source / "lab.yaml"), out, source, namespace="p01", participant=True)
    docs = yaml.safe_load_all((out / "participant" / "access.yaml").read_text())
    (role,) = [d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Role", "lab-participant")]
    return list(role["rules"])


@pytest.mark.timeout(120)
def test_participant_runs_the_notebooks_eks_path_with_zero_denials(
    kube: FakeKube, workshop: tuple[Path, Path], tmp_path: Path
) -> None:
    source, _ = workshop
    _notebook_flow(tmp_path)
    assert kube.denials == []
    requests = _participant_requests(kube)
    assert requests, "the flow ran as the participant"
    # nothing outside their namespace, nothing cluster-wide (discovery aside)
    resource_requests = [a for a in requests if a.resource_request]
    assert {a.namespace for a in resource_requests} == {"p01"}

    rules = _role_rules(source)
    unneeded, unused = [], []
    for i, rule in enumerate(rules):
        # the test fails if this rule is removed: some request of the flow needs it
        others = rules[:i] + rules[i + 1 :]
        if all(any(rule_allows(r, a) for r in others) for a in resource_requests):
            unneeded.append(rule)
        # and each verb x resource it grants is used (exactly what the path calls)
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    if not any(
                        (a.verb, a.api_group, a.combined_resource) == (verb, group, resource)
                        for a in resource_requests
                    ):
                        unused.append(f"{verb} {group or 'core'}/{resource}")
    assert not unneeded, f"Role rules no request of the notebooks' EKS path needs: {unneeded}"
    assert not unused, f"Role grants what the notebooks' EKS path never calls: {unused}"


@pytest.mark.timeout(60)
def test_removing_a_rule_from_the_live_role_denies_the_call_with_one_line(
    kube: FakeKube, workshop: tuple[Path, Path], tmp_path: Path
) -> None:
    role = kube.get("rbac.authorization.k8s.io", "roles", "p01", "lab-participant")
    assert role is not None
    role["rules"] = [r for r in role["rules"] if "leaderworkersets/scale" not in r["resources"]]
    kube.put("rbac.authorization.k8s.io", "roles", "p01", role)
    backend = EksBackend(config=load_config(), poll_s=0.05, cache_dir=tmp_path / "d")
    rendered = plan.render_lab(tmp_path / "rendered")
    backend.apply(rendered, timeout_s=20)
    with pytest.raises(ClusterError) as info:
        backend.scale("vllm-us-west-2a", 2)
    text = str(info.value)
    assert "\n" not in text
    assert 'cannot patch resource "leaderworkersets/scale"' in text
    assert 'in the namespace "p01"' in text and PARTICIPANT in text
    assert kube.denials and "leaderworkersets/scale" in kube.denials[-1]


@pytest.mark.timeout(60)
def test_a_call_outside_the_participants_namespace_is_refused(
    kube: FakeKube, workshop: tuple[Path, Path], tmp_path: Path
) -> None:
    other = EksBackend(config=load_config(), namespace="p02", poll_s=0.05,
                       cache_dir=tmp_path / "d")  # fmt: skip
    with pytest.raises(ClusterError) as info:
        other.status()
    text = str(info.value)
    assert "\n" not in text
    assert 'cannot list resource "leaderworkersets"' in text
    assert 'in API group "leaderworkerset.x-k8s.io" in the namespace "p02"' in text
    assert "forbidden" in text
    # nor anything cluster-wide
    with pytest.raises(ClusterError, match='cannot list resource "nodes"'):
        EksBackend(config=load_config(), scope="cluster", cache_dir=tmp_path / "d2")._list(
            "v1", "Node", None
        )


@pytest.mark.timeout(60)
def test_participants_delete_revokes_the_handed_out_kubeconfig(
    kube: FakeKube, workshop: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = workshop
    handed = out / "p01" / "kubeconfig"
    assert oct(handed.stat().st_mode & 0o777) == "0o600"
    backend = EksBackend(config=load_config(), cache_dir=tmp_path / "d")
    assert backend.status().empty  # works: nothing deployed yet
    admin = connect(tmp_path / "admin", cache_dir=tmp_path / "d-admin")
    dry = delete_participants(admin)
    assert set(dry["action"]) == {"would delete (dry run: pass --yes)"}
    delete_participants(admin, yes=True, timeout_s=20, poll_s=0.05, out_dir=out)
    assert not handed.exists()
    with pytest.raises(ClusterError, match="unauthorized"):
        backend.status()


@pytest.mark.timeout(60)
def test_shared_fleet_participant_watches_read_only(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _lab(tmp_path, profile="shared-fleet")
    config = load_config(source / "lab.yaml")
    admin_kubeconfig = kube.write_kubeconfig(tmp_path / "admin")
    instructor = EksBackend(admin_kubeconfig, config=config, poll_s=0.05,
                            cache_dir=tmp_path / "d-i")  # fmt: skip
    fleet = tmp_path / "fleet"
    render(config, fleet, source)
    applied = instructor.apply(fleet, timeout_s=20)
    assert {"Namespace", "NodePool", "Role"} <= set(applied["kind"])  # cluster scope: all of it
    out = tmp_path / "handout"
    create_participants(connect(admin_kubeconfig, cache_dir=tmp_path / "d-a"), 1, out_dir=out,
                        config=config, source=source, hf_token="not-a-real-token")  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(out / "p01" / "kubeconfig"))
    monkeypatch.setenv("LAB_NAMESPACE", config.namespace)  # what their JupyterLab sets
    viewer = EksBackend(config=config, poll_s=0.05, cache_dir=tmp_path / "d-v")
    assert viewer.read_only and viewer.namespace == "vllm-lab"
    assert viewer.status()["available"].all()
    assert len(viewer.groups()) == len(ZONES) * 2 * 2
    assert all(s.error is None for s in viewer.scrape_metrics())
    rows = viewer.apply(fleet, timeout_s=20)
    assert rows["action"].str.startswith("skipped").all()
    with pytest.raises(ClusterError, match="shared fleet is the instructor's"):
        viewer.scale("vllm-us-west-2a", 0)
    assert [d for d in kube.denials if PARTICIPANT in d] == []


def test_render_for_a_participant_stays_in_their_namespace(tmp_path: Path) -> None:
    source = _lab(tmp_path)
    config = dataclasses.replace(load_config(source / "lab.yaml"), cluster_name="workshop-7")
    out = tmp_path / "p07"
    render(config, out, source, namespace="p07", participant=True)
    text = "\n".join(p.read_text() for p in out.rglob("*.yaml"))
    for doc in (d for p in out.rglob("*.yaml") for d in yaml.safe_load_all(p.read_text())):
        namespace = doc["metadata"].get("namespace")
        assert namespace in (None, "p07"), (doc["kind"], doc["metadata"]["name"], namespace)
        for subject in doc.get("subjects") or []:
            assert subject.get("namespace") in (None, "p07")
    assert 'namespace="p07"' in text  # the KEDA queries' label matchers too
    # the lab.yaml namespace appears nowhere (names like vllm-lab-gpu are object names)
    assert "namespace: vllm-lab" not in text and 'namespace="vllm-lab"' not in text
    assert validate(out) == []  # against the vendored upstream CRD schemas, strictly


@pytest.mark.timeout(60)
def test_in_cluster_the_endpoints_are_cluster_dns_names_with_the_api_key(
    kube: FakeKube, workshop: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("participant-key\n")  # what the mounted vllm-api-key Secret holds
    monkeypatch.setenv("VLLM_API_KEY_FILE", str(key_file))
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    backend = EksBackend(config=load_config(), poll_s=0.05, cache_dir=tmp_path / "d")
    backend.apply(plan.render_lab(tmp_path / "rendered"), timeout_s=20)
    # JupyterLab's pod: same identity, but in-cluster (pod ServiceAccount, cluster DNS)
    backend.conn.in_cluster = True
    assert backend.access == "in-cluster"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fake's Gateway has no address
        ends = backend.endpoints()
    assert ends.zone_urls["us-west-2a"] == "http://vllm-us-west-2a-api.p01.svc.cluster.local:80"
    group = next(g for g in ends.groups if g.group == "vllm-us-west-2a-0")
    assert group.url == "http://vllm-us-west-2a-0.vllm-us-west-2a.p01.svc.cluster.local:8000"
    assert ends.headers == {"Authorization": "Bearer participant-key"}
    assert backend.proxy_headers() == ends.headers  # never the cluster credential to a pod
    assert kube.denials == []
