"""The fake API server's RBAC matches Kubernetes' rules (pkg/apis/rbac/v1/evaluation_helpers.go,
plugin/pkg/auth/authorizer/rbac/rbac.go) on the cases the lab's Role relies on."""

from __future__ import annotations

from fakekube.rbac import (
    Attributes,
    User,
    allowed,
    forbidden_message,
    rule_allows,
    service_account_user,
)

ALICE = service_account_user("p01", "lab-participant")


def _attrs(verb: str, resource: str, sub: str = "", ns: str = "p01", name: str = "") -> Attributes:
    group = "leaderworkerset.x-k8s.io" if resource == "leaderworkersets" else ""
    return Attributes(ALICE, verb, "/x", api_group=group, resource=resource, subresource=sub,
                      namespace=ns, name=name)  # fmt: skip


def test_subresources_are_separate_resources() -> None:
    rule = {"apiGroups": ["leaderworkerset.x-k8s.io"], "resources": ["leaderworkersets"],
            "verbs": ["patch"]}  # fmt: skip
    assert rule_allows(rule, _attrs("patch", "leaderworkersets"))
    assert not rule_allows(rule, _attrs("patch", "leaderworkersets", "scale"))
    star = {**rule, "resources": ["*/scale"]}
    assert rule_allows(star, _attrs("patch", "leaderworkersets", "scale"))
    assert not rule_allows(star, _attrs("patch", "leaderworkersets"))
    every = {**rule, "resources": ["*"]}
    assert rule_allows(every, _attrs("patch", "leaderworkersets", "scale"))


def test_resource_names_restrict_named_requests_only() -> None:
    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"],
            "resourceNames": ["vllm-api-key"]}  # fmt: skip
    assert rule_allows(rule, _attrs("get", "secrets", name="vllm-api-key"))
    assert not rule_allows(rule, _attrs("get", "secrets", name="hf-token"))
    assert not rule_allows(rule, _attrs("list", "secrets"))  # a list has no name


def test_non_resource_urls_and_verbs() -> None:
    rule = {"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]}
    path = Attributes(ALICE, "get", "/apis/leaderworkerset.x-k8s.io/v1", resource_request=False)
    assert rule_allows(rule, path)
    assert not rule_allows(rule, Attributes(ALICE, "post", "/version", resource_request=False))


def test_bindings_namespace_and_subjects() -> None:
    role = {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}
    binding = {
        "metadata": {"namespace": "p01"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "lab-participant", "namespace": "p01"}],
    }
    kwargs = {"cluster_roles": {}, "cluster_role_bindings": [], "roles": {("p01", "r"): role},
              "role_bindings": [binding]}  # fmt: skip
    assert allowed(_attrs("list", "pods"), **kwargs)
    assert not allowed(_attrs("list", "pods", ns="p02"), **kwargs)  # another namespace
    assert not allowed(_attrs("list", "pods", ns=""), **kwargs)  # cluster-wide
    other = service_account_user("p02", "lab-participant")
    assert not allowed(Attributes(other, "list", "/x", resource="pods", namespace="p01"), **kwargs)
    admin = User("kubernetes-admin", ("system:masters", "system:authenticated"))
    assert allowed(Attributes(admin, "delete", "/x", resource="nodes"), **kwargs)


def test_forbidden_message_is_the_api_servers() -> None:
    text = forbidden_message(_attrs("patch", "leaderworkersets", "scale", name="vllm-a"))
    assert text == (
        'leaderworkersets.leaderworkerset.x-k8s.io "vllm-a" is forbidden: User '
        '"system:serviceaccount:p01:lab-participant" cannot patch resource '
        '"leaderworkersets/scale" in API group "leaderworkerset.x-k8s.io" in the namespace "p01"'
    )
    cluster = forbidden_message(Attributes(ALICE, "list", "/api/v1/nodes", resource="nodes"))
    assert cluster.endswith('cannot list resource "nodes" in API group "" at the cluster scope')
