"""run_monitored_load against a real twin (simulated engines): every request accounted for on
both sides, the client's TTFT covering the servers', the same quantiles from the twin's
Prometheus, and the plots drawn from the run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pandas as pd
import pytest
from twin_fixtures import ENGINE, write_rendered

from labutils import figures, monitored_load
from labutils.lessons import n03_monitoring as measure
from labutils.loadtest import open_loop
from labutils.metrics import prometheus as prom
from labutils.targets.twin import TwinBackend


def test_monitored_load_through_the_gateway(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1, "us-west-2b": 1})
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, model_load_s=0.2, time_scale=0.2,
                       scrape_interval_s=0.5)  # fmt: skip
    try:
        twin.up(rendered, timeout_s=60)
        prom.wait_scraped(twin, timeout_s=30)
        engines = measure.simulated_engines(twin)
        schedule = open_loop(10, arrival="poisson", requests=24, input_tokens=32,
                             output_tokens=8)  # fmt: skip
        run = monitored_load.run_monitored_load(twin, schedule, interval_s=0.3, progress=False)
        frame = run.to_frame()
        last_answer_s = run.started_at + (frame["sent_s"] + frame["e2e_s"]).max()
        span = measure.prometheus_window(twin, run.started_at, last_answer_s, timeout_s=30)
        queries = prom.lab_queries("vllm-lab", window=span.window)
        promql = {key: prom.query(twin, queries[key], time_s=span.end_s).set_index("zone")["value"]
                  for key in ("ttft_p50", "ttft_p99", "request_rate")}  # fmt: skip
        bounds = measure.histogram_bounds(twin, "vllm:time_to_first_token_seconds",
                                          time_s=span.end_s)  # fmt: skip
    finally:
        twin.down()
    assert twin.leftovers()["pids"] == []
    assert set(engines["zone"]) == {"us-west-2a", "us-west-2b"} and engines["simulated"].all()
    assert measure.check_every_request_has_outcome(run.result).startswith("OK")
    table = measure.client_server_ttft(run).set_index("zone")
    assert table.loc["all", "client_requests"] == table.loc["all", "server_requests"] == 24
    assert set(table.index) == {"all", "us-west-2a", "us-west-2b"}
    assert measure.check_client_ttft_covers_server(table.reset_index()).startswith("OK")
    # Prometheus over the run's window: every leader scraped just before and after it
    assert (span.scrapes["last_scrape_before_start_s"] <= 0).all()
    assert (span.scrapes["first_scrape_after_end_s"] > 0).all()
    assert span.start_s <= run.started_at < last_answer_s < span.end_s
    # one leader per zone: PromQL's histogram_quantile over the window is the quantile of the
    # direct scrapes' bucket differences (rate's extrapolation scales all buckets alike)
    for zone in ("us-west-2a", "us-west-2b"):
        for q in ("p50", "p99"):
            assert promql[f"ttft_{q}"][zone] * 1e3 == pytest.approx(
                table.loc[zone, f"server_{q}_ms"]
            )
    ok = frame[frame["outcome"] == "ok"]
    rows = []
    for zone, part in ok.groupby("zone"):
        value = promql["ttft_p99"][zone]
        lower, upper = measure.bucket_of(value, bounds)
        rows.append({"zone": zone, "metric": "ttft p99", "promql_ms": value * 1e3,
                     "client_ms": part["ttft_s"].quantile(0.99) * 1e3,
                     "bucket_from_ms": lower * 1e3, "bucket_to_ms": upper * 1e3})  # fmt: skip
    assert measure.check_promql_within_bucket(pd.DataFrame(rows)).startswith("OK: all 2")
    # a rate over the window is the zone's requests / window, up to rate()'s extrapolation
    for zone, part in ok.groupby("zone"):
        assert promql["request_rate"][zone] * span.duration_s == pytest.approx(len(part), rel=0.15)
    # scrapes before, during and after the load, on the load's clock
    times = sorted({s.time_s for s in run.scrapes})
    assert times[0] <= run.started_at <= times[-1]
    assert not run.replicas.empty and set(run.replicas["replicas"]) == {1}
    fig = figures.plot_server_timeline(run, title="t")
    assert len(fig.axes) == 4
    # server quantiles are interpolations inside a bucket: the bounds are drawn beside them
    assert "histogram bucket bounds" in [line.get_label() for line in fig.axes[3].lines]
    # the per-zone percentiles notebook 03 computes with pandas equal the library's summary
    by_hand = ok.groupby("zone")[["ttft_s", "tpot_s"]].quantile([0.5, 0.99]).unstack() * 1e3
    by_hand.columns = [f"{m.removesuffix('_s')}_p{round(q * 100)}_ms" for m, q in by_hand.columns]
    by_hand.insert(0, "n_requests", ok.groupby("zone").size())
    assert measure.check_percentiles_match(by_hand, run.summary()).startswith("OK: 8 percentiles")
    over_time = figures.plot_latency_over_time(frame, window_s=1.0, step_s=0.5, min_requests=2)
    assert len(over_time.axes) == 2 and over_time.axes[0].lines
