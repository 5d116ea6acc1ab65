"""Preflight: is this machine (``local``) or cluster (``eks``) ready for the lab? One row a check.

The local checks are what a participant's laptop or workshop VM needs to run the twin: Python,
CPU cores, free memory, HAProxy, a writable state dir, no twin left over from an earlier run
(or stale state of a crashed one), and manifests that render and validate. The ``eks`` checks
are :func:`labutils.targets.eks.preflight` (API, CRDs, load balancer controller, GPUs, quota).
"""

from __future__ import annotations

import pandas as pd

from labutils.errors import ConfigError

__all__ = [
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
