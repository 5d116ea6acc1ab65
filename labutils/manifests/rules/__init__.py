"""The lab's cross-object rules: what makes these manifests *this* lab, correct and current.

Each rule reads the loaded objects (with file:line) and reports :class:`Problem` findings, one
module per concern: :mod:`.labels`, :mod:`.lws` (LeaderWorkerSet and the vLLM command),
:mod:`.network` (Services/NLBs, Gateway API, traffic policies), :mod:`.autoscaling` (HPA,
KEDA), :mod:`.cluster` (Karpenter, monitoring, RBAC, Secrets). The facts behind them are cited
where they are used and in docs/manifests.md and docs/eks-review.md (LWS v0.10 labels and env,
AWS Load Balancer Controller annotations, NLB health-check ranges, Gateway API limits, HPA
semantics, the pinned add-ons' behaviour).
"""

from __future__ import annotations

from collections.abc import Callable

from labutils.manifests.loader import LoadedObject, Problem
from labutils.manifests.rules._base import GPU, PART_OF, ZONE_LABEL, _Set, fmt_path
from labutils.manifests.rules.autoscaling import _rule_autoscaling
from labutils.manifests.rules.cluster import (
    _rule_cluster_autoscaler,
    _rule_karpenter,
    _rule_monitoring,
    _rule_rbac,
    _rule_secrets,
)
from labutils.manifests.rules.labels import _rule_labels
from labutils.manifests.rules.lws import _rule_lws, _rule_shared_storage
from labutils.manifests.rules.network import _rule_gateway_policies, _rule_routes, _rule_services

__all__ = ["GPU", "PART_OF", "ZONE_LABEL", "check_rules", "fmt_path"]

_RULES: tuple[Callable[[_Set], None], ...] = (
    _rule_labels,
    _rule_lws,
    _rule_shared_storage,
    _rule_services,
    _rule_routes,
    _rule_autoscaling,
    _rule_gateway_policies,
    _rule_karpenter,
    _rule_monitoring,
    _rule_rbac,
    _rule_cluster_autoscaler,
    _rule_secrets,
)


def check_rules(
    objects: list[LoadedObject],
    *,
    is_folder: bool = True,
    schema_invalid: frozenset[int] = frozenset(),
) -> list[Problem]:
    """Run every lab rule over ``objects``.

    Args:
        objects: from :func:`labutils.manifests.load_objects`.
        is_folder: the objects are a whole deployment (a folder); references to objects that
            are absent (a Service, Gateway, PVC, HPA target) are then errors. For a single file
            only the rules that need no other object run.
        schema_invalid: ``id()`` of objects that failed their schema; only the label rules
            check them (their shape cannot be trusted, and the schema problem is reported).
    """
    valid = [o for o in objects if id(o) not in schema_invalid]
    s = _Set(valid, objects, is_folder, [])
    for rule in _RULES:
        rule(s)
    return s.problems
