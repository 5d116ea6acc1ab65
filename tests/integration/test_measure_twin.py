"""run_monitored_load against a real twin (simulated engines): every request accounted for on
both sides, the client's TTFT covering the servers', and the plots drawn from the run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from twin_fixtures import ENGINE, write_rendered

from labutils import figures, monitored_load
from labutils.lessons import n03_monitoring as measure
from labutils.loadtest import open_loop
from labutils.targets.twin import TwinBackend


def test_monitored_load_through_the_gateway(tmp_path: Path) -> None:
    rendered = write_rendered(tmp_path / "rendered", {"us-west-2a": 1, "us-west-2b": 1})
    twin = TwinBackend(tmp_path / "state", engine=ENGINE, model_load_s=0.2, time_scale=0.2)
    try:
        twin.up(rendered, timeout_s=60)
        engines = measure.simulated_engines(twin)
        schedule = open_loop(10, arrival="poisson", requests=24, input_tokens=32,
                             output_tokens=8)  # fmt: skip
        run = monitored_load.run_monitored_load(twin, schedule, interval_s=0.3, progress=False)
    finally:
        twin.down()
    assert twin.leftovers()["pids"] == []
    assert set(engines["zone"]) == {"us-west-2a", "us-west-2b"} and engines["simulated"].all()
    assert measure.check_every_request_has_outcome(run.result).startswith("OK")
    table = measure.client_server_ttft(run).set_index("zone")
    assert table.loc["all", "client_requests"] == table.loc["all", "server_requests"] == 24
    assert set(table.index) == {"all", "us-west-2a", "us-west-2b"}
    assert measure.check_client_ttft_covers_server(table.reset_index()).startswith("OK")
    # scrapes before, during and after the load, on the load's clock
    times = sorted({s.time_s for s in run.scrapes})
    assert times[0] <= run.started_at <= times[-1]
    assert not run.replicas.empty and set(run.replicas["replicas"]) == {1}
    fig = figures.plot_server_timeline(run, title="t")
    assert len(fig.axes) == 4
    # server quantiles are interpolations inside a bucket: the bounds are drawn beside them
    assert "histogram bucket bounds" in [line.get_label() for line in fig.axes[3].lines]
    # the per-zone percentiles notebook 03 computes with pandas equal the library's summary
    frame = run.to_frame()
    ok = frame[frame["outcome"] == "ok"]
    by_hand = ok.groupby("zone")[["ttft_s", "tpot_s"]].quantile([0.5, 0.99]).unstack() * 1e3
    by_hand.columns = [f"{m.removesuffix('_s')}_p{round(q * 100)}_ms" for m, q in by_hand.columns]
    by_hand.insert(0, "n_requests", ok.groupby("zone").size())
    assert measure.check_percentiles_match(by_hand, run.summary()).startswith("OK: 8 percentiles")
    over_time = figures.plot_latency_over_time(frame, window_s=1.0, step_s=0.5, min_requests=2)
    assert len(over_time.axes) == 2 and over_time.axes[0].lines
