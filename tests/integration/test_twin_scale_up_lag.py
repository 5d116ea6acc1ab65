"""A group the twin adds after its first rollout loads as long as a real GPU group (scaled by the
twin's time factor): it is not ready before, and the first groups still start in seconds."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from twin_fixtures import ENGINE, wait_for, write_rendered

from labutils.targets.twin import TwinBackend, load_twin_spec
from labutils.targets.twin.options import INITIAL_GROUP_LOAD_S, TwinOptions

# p5.48xlarge, 2 nodes per group, 8B: ~220 s on EKS; x 0.015 -> ~3.3 s here
TIME_SCALE = 0.015


def _started(events: pd.DataFrame, group: str) -> pd.Series:
    return events[(events["kind"] == "group-started") & (events["object"] == group)].iloc[-1]


def _load_s(events: pd.DataFrame, group: str) -> float:
    found = re.search(r"model load ([\d.]+) s", str(_started(events, group)["message"]))
    assert found, _started(events, group)["message"]
    return float(found.group(1))


def _ready_after_start_s(events: pd.DataFrame, group: str) -> float:
    ready = events[(events["kind"] == "group-ready") & (events["object"] == group)].iloc[-1]
    return float(ready["time_s"]) - float(_started(events, group)["time_s"])


def test_a_scaled_up_group_waits_its_derived_start_time(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1}, replicas=1)
    zone = load_twin_spec(rendered).zones[0]
    expected_s = TwinOptions(time_scale=TIME_SCALE).group_load_s(zone, "added")
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, time_scale=TIME_SCALE)
    try:
        twin.up(rendered, timeout_s=60)
        first = f"{zone.lws}-0"
        assert _load_s(twin.events(), first) == INITIAL_GROUP_LOAD_S
        twin.scale(zone.lws, 2)
        added = f"{zone.lws}-1"
        wait_for(
            lambda: twin.status()["ready_replicas"].iloc[0],
            lambda ready: ready == 2,
            "the added group to become ready",
            timeout_s=60,
        )
        events = twin.events()
        assert abs(_load_s(events, added) - expected_s) < 0.05
        # ready no earlier than its model load allows (a lower bound: a busy machine is later)
        assert _ready_after_start_s(events, added) >= 0.9 * expected_s
    finally:
        twin.down()
    assert twin.leftovers() == {"pids": [], "ports": []}
