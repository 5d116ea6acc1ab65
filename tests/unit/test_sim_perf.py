"""The performance model: calibration against recorded steps, refusals, memory plan and shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labutils.catalog import GPUS, INSTANCE_TYPES, gpu, instance_type, model
from labutils.errors import SimulatorError
from labutils.sim import perf
from labutils.sim.perf import (
    ACHIEVED,
    EngineConfig,
    StepShape,
    gpu_step_s,
    group_start_time_s,
    plan_memory,
    step_time_s,
)
from labutils.sim.server import build_engine

# Recorded by the project on an NVIDIA H200 (tests/data/h200-llama-3.1-8b-step-kernels.ORIGIN.md).
_H200 = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "data" / "h200-llama-3.1-8b-step-kernels.jsonl")
    .read_text()
    .splitlines()
]


def _cfg(m: str, g: str, tp: int = 1, pp: int = 1, **kw: object) -> EngineConfig:
    return EngineConfig(model(m), gpu(g), tp, pp, **kw)  # type: ignore[arg-type]


def _decode_tokens_per_s(cfg: EngineConfig, batch: int, context: int) -> float:
    shape = StepShape(decode_seqs=batch, decode_context_tokens=batch * context)
    return batch / step_time_s(cfg, shape)


def test_single_stream_decode_matches_the_a100_measurement() -> None:
    # Published: Llama-3.1-8B BF16, one A100-40GB, vLLM 0.23, 1024 in / 128 out: ~75 tok/s.
    cfg = _cfg("llama-3.1-8b", "a100-40gb", max_model_len=4096)
    rate = _decode_tokens_per_s(cfg, batch=1, context=1100)
    assert 75 * 0.93 < rate < 75 * 1.07


def test_throughput_saturates_with_batch_size() -> None:
    cfg = _cfg("llama-3.1-8b", "h100", max_model_len=4096)
    rates = {b: _decode_tokens_per_s(cfg, b, 1000) for b in (1, 8, 64, 256, 512)}
    assert rates[8] > 5 * rates[1]  # memory bound: batching is nearly free
    assert rates[512] / rates[256] < 1.3  # KV reads/compute bound: doubling barely helps
    assert rates[512] < 512 / 8 * rates[8] * 0.5


def test_prefill_is_compute_bound_and_grows_with_prompt() -> None:
    cfg = _cfg("llama-3.1-8b", "h100", max_model_len=8192)
    t_1k = step_time_s(cfg, StepShape(prefill_tokens=1024, prefill_attention_pairs=1024 * 512))
    t_4k = step_time_s(cfg, StepShape(prefill_tokens=4096, prefill_attention_pairs=4096 * 2048))
    assert t_4k > 3.5 * (t_1k - 1e-3)  # linear GEMMs plus quadratic attention


def test_tensor_parallel_is_faster_per_token_and_nvlink_beats_pcie() -> None:
    nv1 = _decode_tokens_per_s(_cfg("llama-2-13b", "a100-80gb", 1, max_model_len=4096), 1, 500)
    nv4 = _decode_tokens_per_s(_cfg("llama-2-13b", "a100-80gb", 4, max_model_len=4096), 1, 500)
    assert nv4 > 2 * nv1
    pc1 = _decode_tokens_per_s(_cfg("llama-3.1-8b", "l40s", 1, max_model_len=4096), 1, 500)
    pc4 = _decode_tokens_per_s(_cfg("llama-3.1-8b", "l40s", 4, max_model_len=4096), 1, 500)
    assert pc4 > pc1
    assert pc4 / pc1 < nv4 / nv1  # PCIe all-reduces eat part of the gain


def test_pipeline_parallel_does_not_cut_per_token_time() -> None:
    pp1 = _cfg("llama-2-13b", "a100-80gb", 1, 1, max_model_len=4096)
    pp2 = _cfg("llama-2-13b", "a100-80gb", 1, 2, max_model_len=4096)
    shape = StepShape(decode_seqs=1, decode_context_tokens=500)
    assert step_time_s(pp2, shape) >= step_time_s(pp1, shape)
    assert plan_memory(pp2).num_gpu_blocks > plan_memory(pp1).num_gpu_blocks


def test_kv_cache_grows_with_memory_utilisation_and_tp() -> None:
    low = plan_memory(_cfg("llama-3.1-8b", "h100", gpu_memory_utilization=0.5, max_model_len=4096))
    high = plan_memory(_cfg("llama-3.1-8b", "h100", gpu_memory_utilization=0.9, max_model_len=4096))
    tp2 = plan_memory(_cfg("llama-3.1-8b", "h100", 2, max_model_len=4096))
    assert high.num_gpu_blocks > low.num_gpu_blocks
    assert tp2.num_gpu_blocks > 2 * high.num_gpu_blocks  # weights split + KV heads split
    # 0.9 x 80 GiB - 16.06 GB weights - 1.5 GiB reserve, at 128 KiB per token:
    assert 440_000 < high.kv_cache_tokens < 470_000


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model": "llama-2-13b", "gpu": "a10g"}, "does not fit"),
        ({"model": "llama-3.1-70b", "gpu": "a10g", "tensor_parallel_size": 4}, "does not fit"),
        ({"model": "llama-3.1-8b", "gpu": "h100", "tensor_parallel_size": 3}, "divisible"),
        ({"model": "gpt-5", "gpu": "h100"}, "unknown model"),
        ({"model": "llama-3.1-8b", "gpu": "tpu-v5"}, "unknown GPU"),
        ({"model": "llama-3.1-8b", "gpu": "a10g"}, "--max-model-len"),
        ({"model": "llama-3.1-8b", "gpu": "h100", "max_model_len": 10**6}, "max_position"),
    ],
)
def test_configurations_vllm_refuses_are_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(SimulatorError) as info:
        build_engine(**kwargs, with_metrics=False)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_configurations_that_fit_load() -> None:
    # Llama-2-13B needs TP >= 2 on 24 GB GPUs; 70B fits 2 x (4 x A10G) with PP=2.
    e13 = build_engine("llama-2-13b", "a10g", tensor_parallel_size=2, max_model_len=4096)
    e70 = build_engine(
        "meta-llama/Llama-3.1-70B-Instruct",
        "a10g",
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        max_model_len=8192,
    )
    assert e13.plan.num_gpu_blocks * 16 >= 4096
    assert e70.plan.num_gpu_blocks * 16 >= 8192


def test_serving_entry_point_stays_lean() -> None:
    import subprocess
    import sys

    code = (
        "import sys, labutils.sim.__main__, labutils.sim.server; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'numpy', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_entry_point_refuses_like_vllm_and_accepts_underscore_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from labutils.sim.__main__ import main

    code = main(["serve", "llama-3.1-8b", "--gpu", "a10g", "--max_model_len", "200000"])
    err = capsys.readouterr().err
    assert code != 0
    assert "--max-model-len 200000 is outside" in err and len(err.strip().splitlines()) == 1


def _recorded(kind: str) -> list[dict[str, float]]:
    return [r for r in _H200 if r["kind"] == kind]


def test_h200_rates_are_the_recorded_copy_and_gemm() -> None:
    (copy,) = _recorded("copy")
    (gemm,) = _recorded("gemm")
    assert ACHIEVED["h200"].weight_bytes_per_s == pytest.approx(copy["tb_s"] * 1e12, rel=1e-3)
    assert ACHIEVED["h200"].gemm_flops == pytest.approx(gemm["tflops"] * 1e12, rel=1e-3)


def test_a_step_reads_the_weights_the_recording_counted() -> None:
    # The embedding table is gathered, not read; lm_head is read in full.
    (weights,) = _recorded("weights")
    m = model("llama-3.1-8b")
    assert m.step_weight_bytes == pytest.approx(weights["bytes"], rel=2e-3)
    assert m.step_weight_bytes < m.weight_bytes - 1e9


@pytest.mark.parametrize("row", _recorded("decode"), ids=lambda r: f"batch{r['batch']}")
def test_recorded_h200_decode_steps(row: dict[str, float]) -> None:
    # Batches 1 and 256 calibrated LAYER_LATENCY_S and the KV rate; 8-128 are checks.
    cfg = _cfg("llama-3.1-8b", "h200", max_model_len=4096)
    shape = StepShape(decode_seqs=row["batch"], decode_context_tokens=row["batch"] * row["context"])
    fitted = row["batch"] in (1, 256)
    assert gpu_step_s(cfg, shape) * 1e3 == pytest.approx(row["ms"], rel=0.01 if fitted else 0.07)


def test_recorded_h200_prefill_of_512_tokens() -> None:
    # A check (no constant was fitted on prefill rows). The 2048-token row is not held to 10 %:
    # the recording used standard attention, ~6x slower than vLLM's FlashAttention-3.
    (row, _) = _recorded("prefill")
    cfg = _cfg("llama-3.1-8b", "h200", max_model_len=4096)
    n = row["tokens"]
    shape = StepShape(prefill_tokens=n, prefill_attention_pairs=n * (n + 1) // 2, prefill_seqs=1)
    assert gpu_step_s(cfg, shape) * 1e3 == pytest.approx(row["ms"], rel=0.1)


def test_batch_256_is_gpu_bound_with_async_scheduling() -> None:
    # The old 0.15 ms-per-sequence CPU term made this step 47.6 ms; the H200 computes it in 14.2.
    (row,) = [r for r in _recorded("decode") if r["batch"] == 256]
    cfg = _cfg("llama-3.1-8b", "h200", max_model_len=4096)
    shape = StepShape(decode_seqs=256, decode_context_tokens=256 * 512)
    assert step_time_s(cfg, shape) * 1e3 < row["ms"] * 1.05


def test_cpu_work_sets_the_step_only_when_longer_than_the_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _cfg("llama-3.1-8b", "h200", max_model_len=4096)
    shape = StepShape(decode_seqs=64, decode_context_tokens=64 * 512)
    gpu_s = gpu_step_s(cfg, shape)
    assert step_time_s(cfg, shape) == pytest.approx(gpu_s + perf.STEP_GAP_S)
    monkeypatch.setattr(perf, "CPU_PER_SEQ_S", 1e-3)  # a CPU slower than the GPU
    assert step_time_s(cfg, shape) == pytest.approx(perf.CPU_STEP_BASE_S + 64e-3)


def test_a_mixed_step_costs_about_its_decode_and_prefill_parts() -> None:
    cfg = _cfg("llama-3.1-8b", "h200", max_model_len=4096)
    decode = StepShape(decode_seqs=32, decode_context_tokens=32 * 512)
    prefill = StepShape(prefill_tokens=512, prefill_attention_pairs=512 * 513 // 2, prefill_seqs=1)
    mixed = StepShape(32, 32 * 512, 512, 512 * 513 // 2, 1)
    single = StepShape(decode_seqs=1, decode_context_tokens=512)
    expected = gpu_step_s(cfg, decode) + gpu_step_s(cfg, prefill) - gpu_step_s(cfg, single)
    assert gpu_step_s(cfg, mixed) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("name", sorted(GPUS))
def test_achieved_rates_stay_below_the_datasheet(name: str) -> None:
    g, r = GPUS[name], ACHIEVED[name]
    assert 0.4 * g.bandwidth_bytes_per_s < r.weight_bytes_per_s <= g.bandwidth_bytes_per_s
    assert r.kv_bytes_per_s <= g.bandwidth_bytes_per_s
    assert 0.5 * g.bf16_flops < r.gemm_flops < g.bf16_flops
    assert r.attention_flops < r.gemm_flops
    assert r.source


def test_group_start_takes_minutes_and_grows_with_the_model() -> None:
    small = group_start_time_s(model("llama-3.1-8b"), instance_type("g5.xlarge"))
    big = group_start_time_s(model("llama-3.1-70b"), instance_type("g5.48xlarge"))
    warm = group_start_time_s(
        model("llama-3.1-8b"), instance_type("g5.xlarge"), node_launch=False, image_cached=True
    )
    assert 120 < small < big < 900
    assert warm < small - 60  # an existing node with the image skips launch and pull
    two_nodes = group_start_time_s(model("llama-3.1-70b"), instance_type("g5.48xlarge"), nodes=2)
    assert two_nodes < big  # each node loads half of the weights, in parallel
    faster = group_start_time_s(
        model("llama-3.1-70b"), instance_type("g5.48xlarge"), storage_bytes_per_s=2e9
    )
    assert faster < big


@pytest.mark.parametrize("kwargs", [{"nodes": 0}, {"storage_bytes_per_s": 0}])
def test_group_start_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(SimulatorError):
        group_start_time_s(model("llama-3.1-8b"), INSTANCE_TYPES["g5.xlarge"], **kwargs)  # type: ignore[arg-type]
