"""The simulator's /metrics families match a real vLLM 0.32 scrape family-for-family."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from labutils.sim.engine import FINISHED, SimRequest
from labutils.sim.metrics import build_1_2_5_buckets
from labutils.sim.server import build_engine

_SIM_ONLY = {"lab_sim_info"}


def _families(text: str) -> dict[str, tuple[str, set[frozenset[str]], tuple[float, ...]]]:
    out = {}
    for fam in text_string_to_metric_families(text):
        label_sets = {
            frozenset(k for k in s.labels if k != "le")
            for s in fam.samples
            if not s.name.endswith("_created")
        }
        buckets = tuple(
            sorted({float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")})
        )
        out[fam.name] = (fam.type, label_sets, buckets)
    return out


async def _scrape_after_traffic() -> str:
    # The fixture's max_model_len gives 1-2-5 buckets up to 2000; 2048 does the same.
    engine = build_engine("llama-3.1-8b", "h100", max_model_len=2048, served_model_name="m")
    engine.slow_factor = 0.2  # time scale only; the families are what is checked
    engine.start()
    reqs = [SimRequest(prompt_tokens=50 + i, max_tokens=4, stop_after_tokens=4) for i in range(3)]
    for req in reqs:
        engine.submit(req)
    for req in reqs:
        while await asyncio.wait_for(req.tokens_out.get(), 10) != FINISHED:
            pass
    await engine.stop()
    assert engine.metrics is not None
    return engine.metrics.exposition().decode()


def test_every_emitted_family_matches_the_real_vllm_scrape(data_dir: Path) -> None:
    real = _families((data_dir / "vllm-0.32.0-cpu-metrics.txt").read_text())
    sim_text = asyncio.run(_scrape_after_traffic())
    sim = _families(sim_text)
    required = {
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success",
        "vllm:num_preemptions", "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds", "vllm:request_time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
        "vllm:cache_config_info",
    }  # fmt: skip
    assert required <= set(sim)
    for name, (kind, labels, buckets) in sim.items():
        if name in _SIM_ONLY:
            continue
        assert name in real, f"{name} is not a vLLM family"
        real_kind, real_labels, real_buckets = real[name]
        assert kind == real_kind, name
        assert labels == real_labels, name
        assert buckets == real_buckets, name
    assert 'lab_sim_info{gpu="h100"' in sim_text


def test_traffic_is_counted_in_the_metrics() -> None:
    text = asyncio.run(_scrape_after_traffic())
    samples = {
        (s.name, s.labels.get("finished_reason")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("vllm:generation_tokens_total", None)] == 12
    assert samples[("vllm:prompt_tokens_total", None)] == 50 + 51 + 52
    assert samples[("vllm:request_success_total", "length")] == 3
    assert samples[("vllm:time_to_first_token_seconds_count", None)] == 3
    assert samples[("vllm:inter_token_latency_seconds_count", None)] == 9


def test_1_2_5_buckets_follow_vllm() -> None:
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert build_1_2_5_buckets(2048)[-1] == 2000
