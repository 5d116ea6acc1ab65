"""Kubernetes RBAC authorization, as the API server evaluates it, for the fake API server.

Sources (kubernetes/kubernetes v1.34): ``plugin/pkg/auth/authorizer/rbac/rbac.go`` (a request
is allowed if any ClusterRoleBinding, or any RoleBinding of the request's namespace, binds a
subject matching the user to a role with a rule that allows it; ``appliesTo`` for subjects),
``pkg/apis/rbac/v1/evaluation_helpers.go`` (``VerbMatches``, ``APIGroupMatches``,
``ResourceMatches`` with ``resource/subresource`` and ``*/subresource``,
``ResourceNameMatches``: an empty list allows every name, ``NonResourceURLMatches``: exact or a
trailing ``*`` prefix), ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/
errors.go`` (``forbiddenMessage``), ``staging/src/k8s.io/apiserver/pkg/authorization/
authorizerfactory`` + ``plugin/pkg/auth/authorizer/rbac/bootstrappolicy`` (``system:masters``
is allowed everything; ``system:discovery`` / ``system:basic-user`` bound to every
authenticated user).

Differences: no aggregated ClusterRoles, no escalation checks on RBAC writes (the API server
refuses to let a user grant rights it does not hold), no Node or Webhook authorizers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BOOTSTRAP",
    "Attributes",
    "User",
    "allowed",
    "forbidden_message",
    "rule_allows",
    "service_account_user",
]

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class User:
    """An authenticated identity: name and groups (``system:authenticated`` included)."""

    name: str
    groups: tuple[str, ...] = (AUTHENTICATED,)


def service_account_user(namespace: str, name: str) -> User:
    """The user a ServiceAccount token authenticates as (``serviceaccount.MakeUsername``)."""
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


@dataclass(frozen=True)
class Attributes:
    """``authorizer.Attributes`` of one request."""

    user: User
    verb: str
    path: str
    resource_request: bool = True
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """``RuleAllows``: one PolicyRule against one request."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if url == "*" or url.lower() == attrs.path.lower():
                return True
            if url.endswith("*") and attrs.path.lower().startswith(url[:-1].lower()):
                return True
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.api_group not in groups:
        return False
    resources = rule.get("resources") or []
    star_sub = f"*/{attrs.subresource}" if attrs.subresource else None
    resource_ok = any(r in ("*", attrs.combined_resource, star_sub) for r in resources)
    if not resource_ok:
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _applies_to(subject: Mapping[str, Any], user: User, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.name)
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    return False


def allowed(
    attrs: Attributes,
    *,
    cluster_roles: Mapping[str, Mapping[str, Any]],
    cluster_role_bindings: Iterable[Mapping[str, Any]],
    roles: Mapping[tuple[str, str], Mapping[str, Any]],
    role_bindings: Iterable[Mapping[str, Any]],
) -> bool:
    """Whether RBAC allows ``attrs`` (``system:masters`` always is).

    Args:
        cluster_roles: name -> ClusterRole object.
        cluster_role_bindings: ClusterRoleBinding objects.
        roles: (namespace, name) -> Role object.
        role_bindings: RoleBinding objects (only those of ``attrs.namespace`` count).
    """
    if MASTERS in attrs.user.groups:
        return True
    for binding in cluster_role_bindings:
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != "ClusterRole" or not any(
            _applies_to(s, attrs.user, "") for s in binding.get("subjects") or []
        ):
            continue
        role = cluster_roles.get(str(ref.get("name")))
        if role and any(rule_allows(r, attrs) for r in role.get("rules") or []):
            return True
    if not attrs.namespace:
        return False
    for binding in role_bindings:
        namespace = (binding.get("metadata") or {}).get("namespace", "")
        if namespace != attrs.namespace:
            continue
        if not any(_applies_to(s, attrs.user, namespace) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "Role":
            role = roles.get((namespace, str(ref.get("name"))))
        elif ref.get("kind") == "ClusterRole":
            role = cluster_roles.get(str(ref.get("name")))
        else:
            role = None
        if role and any(rule_allows(r, attrs) for r in role.get("rules") or []):
            return True
    return False


def forbidden_message(attrs: Attributes) -> str:
    """The API server's 403 ``Status.message`` for ``attrs`` (``NewForbidden`` + message)."""
    user = attrs.user.name
    if not attrs.resource_request:
        return f'forbidden: User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    what = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'{what} is forbidden: User "{user}" cannot {attrs.verb} resource '
        f'"{attrs.combined_resource}" in API group "{attrs.api_group}" {where}'
    )


# Bootstrap policy every cluster has (plugin/pkg/auth/authorizer/rbac/bootstrappolicy): API
# discovery and self-reviews for every authenticated user.
BOOTSTRAP: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "clusterroles",
        {
            "metadata": {"name": "system:discovery"},
            "rules": [
                {
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/openapi",
                        "/openapi/*",
                        "/readyz",
                        "/version",
                        "/version/",
                    ],
                    "verbs": ["get"],
                }
            ],
        },
    ),
    (
        "clusterrolebindings",
        {
            "metadata": {"name": "system:discovery"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:discovery",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AUTHENTICATED}
            ],
        },
    ),
    (
        "clusterroles",
        {
            "metadata": {"name": "system:basic-user"},
            "rules": [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                }
            ],
        },
    ),
    (
        "clusterrolebindings",
        {
            "metadata": {"name": "system:basic-user"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:basic-user",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AUTHENTICATED}
            ],
        },
    ),
)
