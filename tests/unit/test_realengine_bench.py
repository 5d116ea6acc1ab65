"""``vllm bench serve`` wrapper: command, guards, and reading a real result file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labutils.errors import LoadTestError
from labutils.realengine.bench import VllmBenchResult, run_vllm_bench, vllm_bench_command


@pytest.fixture
def recorded(data_dir: Path) -> VllmBenchResult:
    raw = json.loads((data_dir / "real-vllm-0.32.0-cpu-bench-result.json").read_text())
    return VllmBenchResult.from_json(raw)


def test_result_converts_ms_to_seconds_and_matches_per_request_data(
    recorded: VllmBenchResult,
) -> None:
    requests = recorded.requests_frame()
    assert len(requests) == recorded.completed == 40
    assert recorded.failed == 0
    # The tool's median TTFT is the median of its own per-request TTFTs (already seconds).
    assert recorded.median_ttft_s == pytest.approx(float(np.median(requests["ttft_s"])))
    assert recorded.median_e2el_s == pytest.approx(float(np.median(requests["e2e_s"])))
    assert recorded.request_throughput == pytest.approx(
        recorded.completed / recorded.duration_s, rel=1e-6
    )
    assert (requests["output_tokens"] == 16).all()
    assert 0 < recorded.median_tpot_s < recorded.median_e2el_s
    frame = recorded.to_frame()
    assert frame.loc[0, "tool"] == "vllm bench serve"
    assert "raw" not in frame.columns


def test_command_fixes_lengths_streams_and_saves_detail() -> None:
    argv = vllm_bench_command(
        "/v/bin/python",
        "http://127.0.0.1:9/",
        "tiny",
        "/m",
        request_rate=2.5,
        num_prompts=10,
        input_tokens=32,
        output_tokens=16,
        result_dir="/tmp/x",
        result_filename="r.json",
    )
    assert argv[:3] == ["/v/bin/vllm", "bench", "serve"]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--base-url") == "http://127.0.0.1:9"
    assert flag("--random-range-ratio") == "0"
    assert flag("--request-rate") == "2.5"
    assert flag("--backend") == "vllm"
    assert "--ignore-eos" in argv and "--save-detailed" in argv


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_prompts": 0}, r"num_prompts=0: choose 1\.\.5000"),
        ({"num_prompts": 10**6}, r"choose 1\.\.5000"),
        ({"request_rate": 0}, r"request_rate=0: must be > 0"),
        ({"url": "http://10.0.0.1:8000"}, r"only to 127\.0\.0\.1"),
    ],
)
def test_unbounded_or_remote_runs_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:1", "request_rate": 1.0, "num_prompts": 5}
    args.update(kwargs)
    url = str(args.pop("url"))
    with pytest.raises(LoadTestError, match=message):
        run_vllm_bench(url, "tiny", "/m", **args)  # type: ignore[arg-type]
