"""The simulator against the recorded real vLLM 0.32.0 (CPU build): same API, same metrics.

Runs in the default tier (no vLLM venv needed): a real simulator process on 127.0.0.1 answers
the contract suite, and its answers must match the committed recording of the real engine
(``tests/data/real-vllm-0.32.0-cpu-contract*``, made by ``labctl realengine record``) in
shapes, status codes, error types, stream chunk sequences and metric families.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labutils.realengine.contract import (
    CORE_METRIC_FAMILIES,
    Recording,
    compare_metric_families,
    compare_recordings,
    metric_families,
    record,
)

DATA = Path(__file__).resolve().parent.parent / "data"
SERVED = "tiny-llama"
# Allowed differences: the simulator counts prompt tokens with its own approximate tokenizer,
# so where the context clamps generation, the number of generated tokens differs slightly.
IGNORE_VALUES = {"clamp_prompt_plus_max_tokens_over_context": ["completion_tokens"]}
# Declared by the simulator on purpose (docs/contracts.md): says it is simulated.
SIM_ONLY_FAMILIES = {"lab_sim_info"}


def start_sim(max_model_len: int = 1024) -> tuple[subprocess.Popen[str], str]:
    """A simulator process serving ``SERVED``; returns it and its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labutils.sim",
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--port",
            "0",
            "--served-model-name",
            SERVED,
            "--max-model-len",
            str(max_model_len),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = json.loads(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{line['port']}"


@pytest.fixture(scope="module")
def sim_recording() -> Iterator[Recording]:
    proc, url = start_sim()
    try:
        yield record(url, SERVED)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def real_recording() -> Recording:
    return Recording.load(
        DATA / "real-vllm-0.32.0-cpu-contract.json",
        DATA / "real-vllm-0.32.0-cpu-contract-metrics.txt",
    )


def test_sim_answers_like_the_real_engine(
    sim_recording: Recording, real_recording: Recording
) -> None:
    assert compare_recordings(real_recording, sim_recording, ignore_values=IGNORE_VALUES) == []


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
