"""Karpenter, monitoring, RBAC and Secrets rules (docs/eks-review.md #6, #7, #13)."""

from __future__ import annotations

from labutils.manifests.loader import FieldPath
from labutils.manifests.rules._base import (
    GPU,
    ZONE_KEY,
    _expected_zone,
    _Set,
)

__all__ = [
    "_rule_cluster_autoscaler",
    "_rule_karpenter",
    "_rule_monitoring",
    "_rule_rbac",
    "_rule_secrets",
]


def _rule_karpenter(s: _Set) -> None:
    for pool in s.of("NodePool"):
        tspec: FieldPath = ("spec", "template", "spec")
        ref = pool.get(*tspec, "nodeClassRef") or {}
        if s.missing("EC2NodeClass", str(ref.get("name"))):
            s.add(pool, (*tspec, "nodeClassRef", "name"), f"no EC2NodeClass {ref.get('name')!r}")
        zone = _expected_zone(pool)
        reqs = pool.get(*tspec, "requirements") or []
        zones = [v for r in reqs if r.get("key") == ZONE_KEY for v in (r.get("values") or [])]
        if zone and zones != [zone]:
            s.add(pool, (*tspec, "requirements"), f"must require {ZONE_KEY} In [{zone}]")
        if not any(t.get("key") == GPU for t in pool.get(*tspec, "taints") or []):
            s.add(pool, (*tspec, "taints"), f"taint GPU nodes with {GPU}:NoSchedule")
        budgets = pool.get("spec", "disruption", "budgets") or []
        frozen = any(
            str(b.get("nodes")) == "0"
            and "Drifted" in (b.get("reasons") or ["Drifted"])
            and not b.get("schedule")
            for b in budgets
        )
        if not frozen:
            s.add(
                pool,
                ("spec", "disruption", "budgets"),
                'add a budget {nodes: "0", reasons: [Drifted]}: a drifted GPU node (new AMI, '
                "edited NodePool) is otherwise replaced under a running group mid-session",
            )
    for node_class in s.of("EC2NodeClass"):
        for ti, term in enumerate(node_class.get("spec", "amiSelectorTerms") or []):
            alias = str(term.get("alias", ""))
            if alias.endswith("@latest"):
                s.add(
                    node_class,
                    ("spec", "amiSelectorTerms", ti, "alias"),
                    f"{alias!r} drifts every node when AWS publishes an AMI; pin a release "
                    "(e.g. al2023@v20260714, lab.yaml eks.karpenter_ami_alias)",
                )


def _rule_monitoring(s: _Set) -> None:
    for monitor in s.of("PodMonitor"):
        if "release" not in monitor.labels:
            s.add(
                monitor,
                ("metadata", "labels"),
                "add label release: <kube-prometheus-stack release> (its Prometheus selects "
                "PodMonitors by it; lab.yaml monitoring.helm_release)",
            )


def _rule_rbac(s: _Set) -> None:
    for role in s.of("Role"):
        for ri, rule in enumerate(role.get("rules") or []):
            resources = [str(r) for r in rule.get("resources") or []]
            verbs = [str(v) for v in rule.get("verbs") or []]
            if "*" in resources or "*" in verbs or "*" in (rule.get("apiGroups") or []):
                s.add(role, ("rules", ri), "no wildcards: grant the verbs and resources used")
            if "secrets" in resources and "participant" in role.name:
                s.add(role, ("rules", ri, "resources"), "participants get no access to Secrets")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for obj in s.of(kind):
            s.add(obj, ("kind",), f"the lab grants nothing cluster-wide; use a Role, not {kind}")


def _rule_cluster_autoscaler(s: _Set) -> None:
    for cm in s.of("ConfigMap"):
        if cm.name == "cluster-autoscaler-status":
            s.add(
                cm,
                ("metadata", "name"),
                "cluster-autoscaler-status is the status Cluster Autoscaler *writes*; configure "
                "CA by flags on its Deployment, or use a Karpenter NodePool for GPU nodes",
            )


def _rule_secrets(s: _Set) -> None:
    for secret in s.of("Secret"):
        for key in ("data", "stringData"):
            if secret.get(key):
                s.add(secret, (key,), "no secret values in manifests; create them out of band")
