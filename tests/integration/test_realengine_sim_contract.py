"""The simulator against the recorded real vLLM 0.32.0 (CPU build): same API, same metrics.

Runs in the default tier (no vLLM venv needed): a real simulator process on 127.0.0.1 answers
the contract suite, and its answers must match the committed recording of the real engine
(``tests/data/real-vllm-0.32.0-cpu-contract*``, made by ``labctl realengine record``) in
shapes, status codes, error types, stream chunk sequences and metric families.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from labutils.realengine.contract import (
    CORE_METRIC_FAMILIES,
    SIM_IGNORED_VALUES,
    SIM_ONLY_FAMILIES,
    Recording,
    compare_metric_families,
    compare_recordings,
    metric_families,
    record,
)

DATA = Path(__file__).resolve().parent.parent / "data"
SERVED = "tiny-llama"


@pytest.fixture(scope="module")
def sim_recording(start_sim: Callable[[str, int], str]) -> Recording:
    return record(start_sim(SERVED, 1024), SERVED)


@pytest.fixture(scope="module")
def real_recording() -> Recording:
    return Recording.load(
        DATA / "real-vllm-0.32.0-cpu-contract.json",
        DATA / "real-vllm-0.32.0-cpu-contract-metrics.txt",
    )


def test_sim_answers_like_the_real_engine(
    sim_recording: Recording, real_recording: Recording
) -> None:
    assert compare_recordings(real_recording, sim_recording, ignore_values=SIM_IGNORED_VALUES) == []


def test_sim_clamps_generation_at_the_context_end_like_vllm(sim_recording: Recording) -> None:
    resp = sim_recording.responses["clamp_prompt_plus_max_tokens_over_context"]
    assert resp.status == 200
    assert resp.body["usage"]["total_tokens"] == 1024
    assert resp.body["choices"][0]["finish_reason"] == "length"


def test_sim_metric_families_match_the_real_engine(
    sim_recording: Recording, real_recording: Recording
) -> None:
    real = metric_families(real_recording.metrics_text)
    sim = {
        name: shape
        for name, shape in metric_families(sim_recording.metrics_text).items()
        if name not in SIM_ONLY_FAMILIES
    }
    # Every family the simulator serves matches the real one; the lab's core ones must exist.
    assert compare_metric_families(real, sim, required=CORE_METRIC_FAMILIES) == []
