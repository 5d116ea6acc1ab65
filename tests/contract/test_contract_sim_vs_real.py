"""Side by side: the same requests to the simulator and to a live real vLLM (CPU build).

The simulator claims vLLM's API and metrics; wherever it does, its answers must match the real
engine's: response shapes, status codes, error bodies, stream chunk sequences, usage, and the
``/metrics`` families (type, labels, buckets).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labutils.realengine import RealEngine, TinyModel
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

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def sim_url(
    real_engine: RealEngine, tiny_model: TinyModel, start_sim: Callable[[str, int], str]
) -> str:
    return start_sim(real_engine.served_model_name, tiny_model.spec.max_model_len)


@pytest.fixture(scope="module")
def recordings(real_engine: RealEngine, sim_url: str) -> tuple[Recording, Recording]:
    name = real_engine.served_model_name
    return record(real_engine.url, name), record(sim_url, name)


def test_api_matches(recordings: tuple[Recording, Recording]) -> None:
    real, sim = recordings
    assert compare_recordings(real, sim, ignore_values=SIM_IGNORED_VALUES) == []


def test_usage_and_lengths_match(recordings: tuple[Recording, Recording]) -> None:
    real, sim = recordings
    for name in ("completion", "chat", "completion_stream", "chat_stream"):
        for rec in (real, sim):
            resp = rec.responses[name]
            usage = (resp.chunks[-1] if resp.chunks else resp.body)["usage"]
            assert usage["completion_tokens"] == 8, (rec.url, name)
    for rec in (real, sim):
        body = rec.responses["clamp_prompt_plus_max_tokens_over_context"].body
        assert body["usage"]["total_tokens"] == 1024, rec.url


def test_metric_families_match(recordings: tuple[Recording, Recording]) -> None:
    real, sim = recordings
    sim_families = {
        k: v for k, v in metric_families(sim.metrics_text).items() if k not in SIM_ONLY_FAMILIES
    }
    problems = compare_metric_families(
        metric_families(real.metrics_text), sim_families, required=CORE_METRIC_FAMILIES
    )
    assert problems == []
