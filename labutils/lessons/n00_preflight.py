"""Preflight: is this machine (``local``) or cluster (``eks``) ready for the lab? One row a check.

The local checks are what a participant's laptop or workshop VM needs to run the twin: Python,
CPU cores, free memory, HAProxy, a writable state dir, no twin left over from an earlier run
(or stale state of a crashed one), and manifests that render and validate. The ``eks`` checks
are :func:`labutils.targets.eks.preflight` (API, CRDs, load balancer controller, GPUs, quota).
"""

from __future__ import annotations

import pandas as pd

from labutils.errors import ConfigError, ValidationError

__all__ = [
    "check_gpus_match_plan",
    "check_preflight",
]


def check_preflight(frame: pd.DataFrame) -> pd.DataFrame:
    """Raise unless every check passed; returns the passed table for display.

    Raises:
        ConfigError: names the first failed check and its fix (all of them in the message).
    """
    if frame.empty or not {"check", "ok"} <= set(frame.columns):
        raise ConfigError(
            "preflight ran no checks; run labutils.targets.preflight.preflight() first"
        )
    failed = frame[~frame["ok"].astype(bool)]
    if not failed.empty:
        parts = [f"{r['check']}: {r['detail']} (fix: {r['fix']})" for _, r in failed.iterrows()]
        raise ConfigError(f"preflight: {len(parts)} check(s) failed: " + "; ".join(parts))
    return frame


def check_gpus_match_plan(gpus: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """Raise unless the GPUs computed in the notebook agree with the lab's plan, per zone.

    Args:
        gpus: one row per zone (index) with ``GPUs at start``, ``GPUs at HPA max`` and
            ``NodePool GPU limit``, computed from the rendered objects.
        plan: :func:`labutils.manifests.plan.deployment_plan` of the same folder.

    Holds when each zone's GPUs at start equal the plan's LeaderWorkerSet GPUs, its NodePool
    limit equals the plan's, and the HPA's most groups fit under that limit (otherwise the HPA
    would ask for groups Karpenter may never provide).

    Raises:
        ValidationError: names the zone and both numbers.
    """
    need = {"GPUs at start", "GPUs at HPA max", "NodePool GPU limit"}
    if not need <= set(gpus.columns):
        raise ValidationError(f"GPU table lacks {sorted(need - set(gpus.columns))}; compute them")
    problems = []
    for zone_key, row in gpus.iterrows():
        zone = str(zone_key)
        in_zone = plan[plan["zone"].eq(zone)]
        lws = int(in_zone.loc[in_zone["kind"].eq("LeaderWorkerSet"), "gpus"].sum())
        pool = int(in_zone.loc[in_zone["kind"].eq("NodePool"), "gpus"].sum())
        if int(row["GPUs at start"]) != lws:
            problems.append(f"{zone}: {int(row['GPUs at start'])} GPUs at start, plan says {lws}")
        if int(row["NodePool GPU limit"]) != pool:
            problems.append(f"{zone}: NodePool limit {int(row['NodePool GPU limit'])}, plan {pool}")
        if int(row["GPUs at HPA max"]) > pool:
            problems.append(
                f"{zone}: the HPA may ask for {int(row['GPUs at HPA max'])} GPUs but the NodePool "
                f"allows {pool} (raise its limit or lower max_replicas in lab.yaml)"
            )
    if problems:
        raise ValidationError(f"GPUs per zone: {problems[0]}", problems)
    columns = ["GPUs at start", "GPUs at HPA max", "NodePool GPU limit"]
    return gpus[columns].astype(int).assign(**{"agrees with plan": True})
