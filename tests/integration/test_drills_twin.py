"""Failure drills on a real twin (controller, HAProxy, simulated engines on 127.0.0.1).

Health checks: the fixtures' 5 s interval x time_scale 0.2 = 1 s, unhealthy threshold 2, so a
dead part must be out within 3 s (+ slack for a loaded machine).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from twin_fixtures import ENGINE, write_rendered

from labutils import drills
from labutils.errors import ValidationError
from labutils.loadtest import OUTCOMES
from labutils.targets.twin import TwinBackend

TIME_SCALE = 0.2
WEIGHTS = {"us-west-2a": 1, "us-west-2b": 1}
LOAD = {"rate_rps": 15.0, "duration_s": 4.5, "fault_at_s": 1.0, "output_tokens": 8,
        "progress": False}  # fmt: skip


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinBackend]:
    root = tmp_path_factory.mktemp("drills")
    rendered = write_rendered(root / "rendered", WEIGHTS, replicas=2)
    backend = TwinBackend(root / "state", engine=ENGINE, model_load_s=0.3, time_scale=TIME_SCALE)
    try:
        backend.up(rendered, timeout_s=60)
        yield backend
    finally:
        backend.down()


def _accounted(result: drills.DrillResult) -> None:
    frame = result.to_frame()
    assert len(frame) == result.load.schedule.num_requests
    assert set(frame["outcome"]) <= set(OUTCOMES)


def test_zone_kill_fails_over_within_the_predicted_bound(twin: TwinBackend) -> None:
    result = drills.run_drill(twin, "zone-kill", "us-west-2a", restore_at_s=3.5, **LOAD)
    _accounted(result)
    assert result.health is not None
    assert result.health.predicted_detect_s == pytest.approx(5 * TIME_SCALE * 3)
    assert 0 < result.detect_s <= result.health.predicted_detect_s + 1.5
    frame = result.to_frame()
    failed = frame[frame["outcome"] != "ok"]
    # only what was in flight or sent before detection failed; afterwards all went to 2b
    assert set(failed["phase"]) <= {"before", "detecting"}
    after = frame[frame["phase"] == "after-detection"]
    assert len(after) > 0 and set(after["zone"]) == {"us-west-2b"}
    assert not math.isnan(result.recovered_s) and result.recovered_s > result.restore_s
    summary = drills.check_drill(result)
    assert summary["failed_after_detection"].iloc[0] == 0
    assert set(twin.status()["ready_replicas"]) == {2}  # restored: both zones whole again


def test_group_crash_is_recreated_and_only_in_flight_requests_fail(twin: TwinBackend) -> None:
    before = int(twin.groups().query("group == 'vllm-us-west-2b-0' and role == 'leader'")
                 ["restarts"].iloc[0])  # fmt: skip
    result = drills.run_drill(twin, "group-crash", "vllm-us-west-2b-0", **LOAD)
    _accounted(result)
    frame = result.to_frame()
    failed = frame[frame["outcome"] != "ok"]
    assert failed["in_flight_at_fault"].all() or set(failed["phase"]) <= {"before", "detecting"}
    assert 0 <= result.detect_s < 1.0  # the supervisor sees the process die, no health checks
    assert result.recover_s > 0
    drills.check_drill(result)
    after = int(twin.groups().query("group == 'vllm-us-west-2b-0' and role == 'leader'")
                ["restarts"].iloc[0])  # fmt: skip
    assert after == before + 1


def test_unhealthy_group_leaves_rotation_without_failures(twin: TwinBackend) -> None:
    result = drills.run_drill(twin, "group-unhealthy", "vllm-us-west-2a-1", restore_at_s=3.5,
                              **LOAD)  # fmt: skip
    _accounted(result)
    frame = result.to_frame()
    assert (frame["outcome"] == "ok").all()  # it kept answering while it was being taken out
    assert result.health is not None
    assert 0 < result.detect_s <= result.health.predicted_detect_s + 1.5
    out = frame[frame["phase"] == "after-detection"]
    assert len(out) > 0 and "vllm-us-west-2a-1" not in set(out["group"])
    drills.check_drill(result)


def test_load_balancer_restart_is_detected_and_recovers(twin: TwinBackend) -> None:
    result = drills.run_drill(twin, "lb-restart", **LOAD)
    _accounted(result)
    assert result.detection_source == "twin event haproxy-restarted"
    assert 0 <= result.detect_s < 2.0 and result.recover_s > 0
    frame = result.to_frame()
    late = frame[frame["sent_s"] > result.recovered_s + 0.5]
    assert len(late) > 0 and (late["outcome"] == "ok").all()
    drills.check_drill(result)


def test_check_drill_rejects_failures_where_none_are_allowed(twin: TwinBackend) -> None:
    result = drills.run_drill(twin, "zone-kill", "us-west-2b", **{**LOAD, "duration_s": 3.0})
    assert (result.to_frame()["outcome"] != "ok").any()  # a killed zone drops its in-flight
    with pytest.raises(ValidationError, match="failed"):
        drills.check_drill(result, expect_failures=False)


def test_weighted_strict_keeps_sending_the_dead_zone_its_share(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", WEIGHTS, replicas=1)
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, model_load_s=0.3,
                       time_scale=TIME_SCALE, strategy="weighted-strict")  # fmt: skip
    try:
        twin.up(rendered, timeout_s=60)
        # detection can take up to 3 s after the fault: 3 s more of load leaves ~45 requests
        # after it, enough for the binomial check in check_no_failover
        result = drills.run_drill(twin, "zone-kill", "us-west-2a", **{**LOAD, "duration_s": 7.0})
    finally:
        twin.down()
    assert result.target_share == pytest.approx(0.5)
    frame = result.to_frame()
    after = frame[frame["phase"] == "after-detection"]
    assert (after["status"] == 503).sum() > 0
    drills.check_no_failover(result)
    with pytest.raises(ValidationError, match="after the health checks"):
        drills.check_drill(result)


def _labctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "labutils.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


def test_cli_slow_group_drill_and_one_line_errors(twin: TwinBackend, tmp_path: Path) -> None:
    state = str(twin.state_dir)
    png = tmp_path / "slow.png"
    done = _labctl("drill", "group-slow", "--target", "local", "--state-dir", state, "--on",
                   "vllm-us-west-2a-0", "--rate", "10", "--duration", "2.5", "--fault-at", "0.5",
                   "--plot", str(png), "--check")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "group-slow" in done.stdout and "failed " in done.stdout
    assert png.stat().st_size > 10_000
    groups = twin.groups()
    assert set(groups[groups["role"] == "leader"]["fault"]) == {"ok"}  # the slow fault lifted
    bad = _labctl("drill", "group-crash", "--target", "local", "--state-dir", state, "--on",
                  "vllm-nowhere-0")  # fmt: skip
    assert bad.returncode == 2
    assert "choose one of: vllm-us-west-2a-0" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
