"""Apply the rendered manifests and watch the rollout: LWS groups ready over time, per zone."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labutils._progress import progress_bar, show_progress
from labutils.errors import WaitTimeout
from labutils.manifests.plan import (
    _lws_objects,
)
from labutils.protocol import Backend

__all__ = [
    "Rollout",
    "watch_apply",
]


# --- applying and watching -------------------------------------------------------------------
@dataclass(frozen=True)
class Rollout:
    """What :func:`watch_apply` saw: when each group first appeared and became ready.

    Attributes:
        groups: one row per group: zone, lws, group, pods, seen_s, ready_s (seconds since the
            apply started; NaN where never seen/ready).
        expected_groups: groups the rendered manifests ask for (replicas × zones).
        apply_s: how long the apply call itself took.
        total_s: from the apply until every LWS was Available.
        target: the backend's target (``local`` or ``eks``).
    """

    groups: pd.DataFrame
    expected_groups: int
    apply_s: float
    total_s: float
    target: str

    def to_frame(self) -> pd.DataFrame:
        """The groups with their time to ready (``ready_s - seen_s``)."""
        frame = self.groups.copy()
        frame["time_to_ready_s"] = frame["ready_s"] - frame["seen_s"]
        return frame


def _expected(rendered: str | Path) -> dict[str, int]:
    return {o.name: int(o.data["spec"].get("replicas", 1)) for o in _lws_objects(rendered)}


def _available(status: pd.DataFrame) -> pd.Series:
    if "available" in status:
        return status["available"].astype(bool)
    return status["conditions"].astype(str).str.contains("Available")


def watch_apply(
    backend: Backend,
    rendered: str | Path,
    *,
    timeout_s: float = 900.0,
    poll_s: float = 0.25,
) -> Rollout:
    """Apply the rendered manifests and watch (progress bar) until every LWS is Available.

    Each group's times come from polling ``backend.groups()``: first seen (its pods exist) and
    ready (every pod of the group ready). Works the same on the twin and on EKS.

    Raises:
        WaitTimeout: not all groups ready in ``timeout_s``; names those that are not and the
            LWS status.
    """
    expected = _expected(rendered)
    want = sum(expected.values())
    start = time.monotonic()
    backend.apply(Path(rendered), wait=False, timeout_s=timeout_s)
    apply_s = time.monotonic() - start
    seen: dict[str, dict[str, Any]] = {}
    with progress_bar(total=want, desc="groups ready", unit="group", leave=False) as bar:
        while True:
            now = time.monotonic() - start
            pods = backend.groups()
            for group, part in pods.groupby("group", sort=False) if not pods.empty else ():
                row = seen.setdefault(str(group), {
                    "zone": str(part["zone"].iloc[0]), "lws": str(part["lws"].iloc[0]),
                    "group": str(group), "pods": len(part), "seen_s": now,
                    "ready_s": float("nan")})  # fmt: skip
                row["pods"] = len(part)
                if part["ready"].astype(bool).all() and row["ready_s"] != row["ready_s"]:
                    row["ready_s"] = now
            ready = sum(1 for r in seen.values() if r["ready_s"] == r["ready_s"])
            show_progress(bar, min(ready, want))
            status = backend.status()
            if ready >= want and not status.empty and bool(_available(status).all()):
                break
            if now > timeout_s:
                waiting = [g for g, r in seen.items() if r["ready_s"] != r["ready_s"]]
                last = "; ".join(f"{r.lws} {r.ready_replicas}/{r.replicas} ready"
                                 for r in status.itertuples())  # fmt: skip
                raise WaitTimeout(
                    f"apply of {rendered}: {ready}/{want} groups ready after {timeout_s:.0f}s "
                    f"(not ready: {', '.join(waiting) or 'none created yet'}); status: {last}"
                )
            time.sleep(poll_s)
    total_s = time.monotonic() - start
    frame = pd.DataFrame(list(seen.values()),
                         columns=["zone", "lws", "group", "pods", "seen_s", "ready_s"])  # fmt: skip
    frame = frame.sort_values(["zone", "group"]).reset_index(drop=True)
    return Rollout(frame, want, apply_s, total_s, getattr(backend, "target", ""))
