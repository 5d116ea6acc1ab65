"""The twin's HPA loop under a load step: up, then down after the stabilization window, with
every decision and its inputs in the events table. The HPA reads the queue through the twin's
Prometheus and the lab's prometheus-adapter rule, as on the cluster."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from twin_fixtures import ENGINE, wait_for, write_rendered
from twin_gateway_client import send_requests

from labutils.targets.twin import TwinBackend

HPA = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "metrics": [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "vllm_num_requests_waiting"},
                "target": {"type": "AverageValue", "averageValue": "1"},
            },
        }
    ],
    "behavior": {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 1}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 3,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 1}],
        },
    },
}


def test_load_step_scales_up_then_down_after_window(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1}, replicas=1, hpa=HPA)
    twin = TwinBackend(
        tmp_path / "state",
        engine=ENGINE,
        model_load_s=0.2,
        sync_period_s=0.5,
        time_scale=0.2,
        scrape_interval_s=0.5,
    )
    try:
        twin.up(rendered, timeout_s=60)
        twin.wait_scraped(timeout_s=30)  # the HPA sees the queue only once Prometheus scrapes
        url = twin.endpoints().gateway_url
        # 16 concurrent 1-second requests against max-num-seqs 4: ~12 waiting per leader
        results = asyncio.run(send_requests(url, 64, concurrency=16, max_tokens=200))
        assert all(r["status"] == 200 for r in results)
        peak = twin.hpa_events()["desired_replicas"].max()
        assert peak == 3
        wait_for(
            lambda: int(twin.status()["replicas"].iloc[0]),
            lambda n: n == 1,
            "the HPA to scale back to 1 group",
        )
        events = twin.hpa_events()
    finally:
        twin.down()
    assert twin.leftovers()["pids"] == []
    ups = events[(events["desired_replicas"] > events["current_replicas"])]
    downs = events[(events["desired_replicas"] < events["current_replicas"])]
    assert not ups.empty and not downs.empty
    # inputs are recorded: the metric's average per leader and its target
    assert ups["vllm_num_requests_waiting:usage"].max() > 1.0
    assert set(ups["vllm_num_requests_waiting:target"]) == {1.0}
    # the first scale-down waits for the 3 s window after the last high recommendation
    first_down = downs["time_s"].min()
    high = events[(events["metric_replicas"] >= 3) & (events["time_s"] < first_down)]
    assert first_down - high["time_s"].max() >= 2.5, events[["time_s", "metric_replicas"]]
    # scale-down is rate-limited to 1 group per period: 3 -> 2 -> 1
    assert list(downs["desired_replicas"])[:2] == [2, 1]
