"""The real engine itself: tiny-model reproducibility, start cost, and drift from the fixtures.

The committed recordings (``tests/data/real-vllm-0.32.0-cpu-contract*``) are what the
simulator's contract is checked against; these tests make sure they still describe the
engine the installer puts in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labutils.realengine import (
    RealEngine,
    RealEngineEnv,
    TinyModel,
    TinyModelSpec,
    build_tiny_model,
)
from labutils.realengine.bench import run_vllm_bench
from labutils.realengine.contract import (
    Recording,
    compare_metric_families,
    compare_paths,
    metric_families,
    record,
    response_paths,
    stream_kinds,
)

pytestmark = pytest.mark.contract

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def fixture_recording() -> Recording:
    return Recording.load(
        DATA / "real-vllm-0.32.0-cpu-contract.json",
        DATA / "real-vllm-0.32.0-cpu-contract-metrics.txt",
    )


@pytest.fixture(scope="module")
def live_recording(real_engine: RealEngine) -> Recording:
    return record(real_engine.url, real_engine.served_model_name)


def test_tiny_model_is_reproducible_from_its_seed(
    vllm_env: RealEngineEnv, tiny_model: TinyModel, tmp_path: Path
) -> None:
    again = build_tiny_model(tmp_path / "same", TinyModelSpec(seed=0), env=vllm_env)
    other = build_tiny_model(tmp_path / "other", TinyModelSpec(seed=1), env=vllm_env)
    assert again.weights_sha256 == tiny_model.weights_sha256
    assert again.tokenizer_sha256 == tiny_model.tokenizer_sha256
    assert other.weights_sha256 != tiny_model.weights_sha256
    assert tiny_model.spec.hidden_size <= 128
    assert 300 <= tiny_model.vocab_size <= 1024
    chat_template = (tiny_model.path / "chat_template.jinja").read_text()
    assert "add_generation_prompt" in chat_template


def test_replica_starts_lean(real_engine: RealEngine) -> None:
    assert real_engine.ready_after_s is not None
    # local-twin-facts.md: ~17 s and ~1-1.4 GB on an idle machine; generous for a busy one.
    assert real_engine.ready_after_s < 240
    assert 0.3e9 < real_engine.rss_bytes() < 2.5e9
    print(
        f"\nreal engine ready after {real_engine.ready_after_s:.1f} s, "
        f"RSS {real_engine.rss_bytes() / 1e9:.2f} GB"
    )


def test_live_answers_match_the_recorded_fixture(
    live_recording: Recording, fixture_recording: Recording
) -> None:
    assert set(live_recording.responses) == set(fixture_recording.responses)
    problems = []
    for name, want in fixture_recording.responses.items():
        got = live_recording.responses[name]
        if (got.status, got.content_type) != (want.status, want.content_type):
            problems.append(
                f"{name}: {got.status} {got.content_type}, recorded "
                f"{want.status} {want.content_type}"
            )
        if want.chunks is not None:
            if stream_kinds(got.chunks or []) != stream_kinds(want.chunks):
                problems.append(f"{name}: chunk kinds {stream_kinds(got.chunks or [])}")
            if got.done != want.done:
                problems.append(f"{name}: [DONE] {got.done}")
        # $.data[].root is the model folder, the same shape wherever it lies.
        problems += [
            f"{name}: {p}" for p in compare_paths(response_paths(want), response_paths(got))
        ]
    assert problems == []


def test_live_metrics_match_the_recorded_families(
    live_recording: Recording, fixture_recording: Recording
) -> None:
    want = metric_families(fixture_recording.metrics_text)
    got = metric_families(live_recording.metrics_text)
    assert compare_metric_families(want, got, required=want) == []


def test_vllm_bench_serve_runs_against_the_real_engine(
    real_engine: RealEngine, tiny_model: TinyModel, vllm_env: RealEngineEnv
) -> None:
    result = run_vllm_bench(
        real_engine.url,
        real_engine.served_model_name,
        tiny_model.path,
        request_rate=5.0,
        num_prompts=20,
        input_tokens=32,
        output_tokens=16,
        env=vllm_env,
    )
    assert result.completed == 20 and result.failed == 0
    assert (result.requests_frame()["output_tokens"] == 16).all()
    assert 0 < result.median_ttft_s < result.median_e2el_s
