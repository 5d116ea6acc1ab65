"""GPU-grounded performance model of one vLLM engine: memory plan, step time and group start time.

Step time (``step_time_s``) is the sum of what one engine step does on each GPU, every rate an
*achieved* one measured or fitted per GPU (``ACHIEVED``), never a datasheet figure times one
global factor:

    gpu_s = layers x LAYER_LATENCY_S                      fixed kernel latency per layer
          + step weight bytes / (TP x weight_bytes_per_s)  weights a step reads (embedding: only
                                                           the used rows; lm_head in full)
          + KV bytes read and written / kv_bytes_per_s     attention over the scheduled contexts
          + GEMM FLOPs / (TP x gemm_flops)                 2 x body params per token, plus lm_head
                                                           for each sampled row only
          + causal-attention FLOPs / attention_flops       prefill chunks (FlashAttention)
          + TP all-reduces and PP hand-offs
    step_s = max(gpu_s + STEP_GAP_S, cpu_s)

The terms add up rather than overlap: the recorded H200 steps (tests/data/
h200-llama-3.1-8b-step-kernels.jsonl) show a step costing close to the sum of its memory and
compute parts, for decode batches up to 256 as for prefill chunks. ``cpu_s`` is vLLM V1's
scheduling and input/output processing, which async scheduling runs *while* the GPU computes the
previous step, so it only shows when it exceeds the GPU time. ``benchmarks/sim_fidelity.py``
compares the model with every published measurement it has; ``docs/simulator-fidelity.md`` says
where it is weak. A calibration file measured on a real GPU (``benchmarks/gpu_step_profile.py``)
replaces ``gpu_s`` by interpolated measurements (:class:`StepCalibration`).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labutils.catalog import GIB, GpuSpec, InstanceType, ModelSpec
from labutils.errors import SimulatorError

__all__ = [
    "ACHIEVED",
    "BLOCK_SIZE_TOKENS",
    "FRONTEND_LATENCY_S",
    "AchievedRates",
    "CalibrationRow",
    "EngineConfig",
    "MemoryPlan",
    "StepCalibration",
    "StepShape",
    "default_max_num_batched_tokens",
    "gpu_step_s",
    "group_start_time_s",
    "load_calibration",
    "plan_memory",
    "roofline_gpu_s",
    "step_time_s",
]

# vLLM's default KV-cache block size (tokens per block); vLLM docs "--block-size", default 16.
BLOCK_SIZE_TOKENS = 16


@dataclass(frozen=True)
class AchievedRates:
    """What one GPU achieves, as opposed to its datasheet (``labutils.catalog.GPUS``).

    Attributes:
        weight_bytes_per_s: streaming the weights through the GEMMs of a step.
        kv_bytes_per_s: reading the KV cache in decode attention (effective, see ``_KV_EFF``).
        gemm_flops: dense BF16 matrix products.
        attention_flops: causal prefill attention (FlashAttention kernels in vLLM).
        source: where the numbers come from.
    """

    weight_bytes_per_s: float
    kv_bytes_per_s: float
    gemm_flops: float
    attention_flops: float
    source: str


# --- Calibration data (every constant below names it) -------------------------------------
# [K] tests/data/h200-llama-3.1-8b-step-kernels.jsonl: Llama-3.1-8B steps recorded by the
#     project on one NVIDIA H200 (plain PyTorch kernels in CUDA graphs, median of 20 replays):
#     copy 2.7686 TB/s (bytes read + written), 8192^3 BF16 GEMM 797.0 TFLOP/s, decode batches
#     1-256 at context 512, prefills of 512 and 2048 tokens.
# [Y] InferenceBench concurrency sweep (yobitelcomm.github.io/bench/recipes/concurrency-sweep/):
#     Llama-3.1-8B-Instruct, one H100-80GB-HBM3, vLLM 0.21.0, chatbot-short (10 short chat
#     prompts, max_tokens 128): TPOT p50 6.48 ms at concurrency 1.
# [M] J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100" (johnmusgrave.com/p/
#     vllm-throughput-latency-sweep-on): Llama-3.1-8B-Instruct BF16, one A100-40GB, vLLM 0.23.0,
#     1024 in / 128 out: ~75 output tokens/s at concurrency 1 (13.3 ms per token).
# [FA3] J. Shah et al., "FlashAttention-3" (arXiv:2407.08608), fig. "Attention forward speed,
#     head dim 128 (H100 80GB SXM5)": FlashAttention-3 467/565/625 TFLOP/s at 512/1k/2k
#     tokens, "standard attention" 74/100/119 TFLOP/s.

# Fixed latency per transformer layer: kernel launches and ramp-up/tail of ~10 small kernels in
# a CUDA graph, which dominates nothing at batch 1 on an A10G but is 7 % of an H200 decode step.
# Fitted on [K] decode batch 1 (5.863 ms): 5.863 - 15.01 GB / 2.7686 TB/s - KV and GEMM terms
# (0.03 ms) = 0.41 ms over 32 layers. Plain PyTorch launches a few more kernels per layer than
# vLLM's fused ones, so this slightly overstates vLLM's small-batch steps.
LAYER_LATENCY_S = 12.8e-6

# H200 [K]: weights stream at the measured copy rate (decode batch 1 reads 15.01 GB in 5.42 ms
# of its 5.86 ms); GEMMs at the measured 797 TFLOP/s. The effective KV rate is fitted on [K]
# decode batch 256 (14.24 ms = 0.41 + 5.42 + 4.82 GEMM + 17.18 GB / 4.79 TB/s): it is close to
# the HBM datasheet because the GEMM term, added in full, already covers part of the time the
# attention kernels' reads overlap; the fit holds the unfitted batches 8-128 within 6 %.
_H200_WEIGHT_BPS = 2.7686e12
_GH100_GEMM_FLOPS = 797.0e12  # [K] gemm row; H100 SXM has the same GH100 die, SMs and clocks
_KV_EFF = 4.787e12 / 4.8e12  # [K] fitted KV rate / H200 datasheet bandwidth
_GEMM_EFF = _GH100_GEMM_FLOPS / 989e12  # [K] achieved / dense BF16 datasheet peak (0.806)
# vLLM runs FlashAttention-3 on Hopper [FA3]: ~470-620 TFLOP/s non-causal at 512-2k tokens;
# causal chunks of a few hundred tokens sit lower, so 0.45 of the dense peak (445 TFLOP/s on
# H100/H200). FlashAttention-2 on Ampere/Ada reaches a similar fraction of its lower peak (the
# FA2 paper reports 50-73 % on A100). [K] used standard attention (~70 TFLOP/s measured, as
# [FA3]'s "standard attention" row), so its 2048-token prefill is slower than vLLM's.
_ATTN_EFF = 0.45
# Weight streaming fitted on published single-stream TPOTs: [Y] H100 6.48 ms at ~100 tokens of
# context -> 2.52 TB/s (75 % of 3.35 TB/s); [M] A100-40GB 13.3 ms at ~1090 tokens -> 1.185 TB/s
# (76 % of 1.555 TB/s). GPUs without a measurement use their mean, 0.756 of the datasheet.
_H100_WEIGHT_BPS = 2.524e12
_A100_40_WEIGHT_BPS = 1.185e12
_WEIGHT_EFF_ESTIMATE = (_H100_WEIGHT_BPS / 3350e9 + _A100_40_WEIGHT_BPS / 1555e9) / 2


def _rates(gpu: GpuSpec, weight_bps: float, source: str) -> AchievedRates:
    return AchievedRates(
        weight_bytes_per_s=weight_bps,
        kv_bytes_per_s=_KV_EFF * gpu.bandwidth_bytes_per_s,
        gemm_flops=_GEMM_EFF * gpu.bf16_flops,
        attention_flops=_ATTN_EFF * gpu.bf16_flops,
        source=source,
    )


def _achieved_table() -> dict[str, AchievedRates]:
    from labutils.catalog import GPUS

    measured = {
        "h200": (_H200_WEIGHT_BPS, "measured [K]: copy, GEMM, decode batch 1/256 fits"),
        "h100": (_H100_WEIGHT_BPS, "weights fitted on [Y]; GEMM, KV, layer latency from [K]"),
        "a100-40gb": (_A100_40_WEIGHT_BPS, "weights fitted on [M]; other rates scaled from [K]"),
    }
    table = {}
    for name, spec in GPUS.items():
        bps, source = measured.get(
            name,
            (
                _WEIGHT_EFF_ESTIMATE * spec.bandwidth_bytes_per_s,
                "estimate: datasheet x efficiencies of the measured GPUs (unchecked)",
            ),
        )
        table[name] = _rates(spec, bps, source)
    return table


# Achieved rates per GPU name of ``labutils.catalog.GPUS``.
ACHIEVED: dict[str, AchievedRates] = _achieved_table()

# With async scheduling (vLLM PR #19970, on by default since PR #27614: vllm/config/vllm.py sets
# ``async_scheduling = True`` when nothing forbids it) the scheduler runs one step ahead and
# the model runner overlaps input preparation and sampling with the forward pass (PR #23569,
# "elimination of the CPU overhead of input preparation and sampling"). What is left between
# two GPU steps is the CUDA-graph launch and the hand-off of sampled tokens: ~0.1 ms.
STEP_GAP_S = 0.1e-3

# The CPU work per step that async scheduling overlaps with the GPU (scheduling, input
# preparation, output processing): ~1 ms plus ~20 us per sequence (vLLM issue #10634 measured
# a 5-6 ms gap between decode steps at batch 256 before async scheduling). It sets the step
# time only when it exceeds the GPU time (small models on fast GPUs). The old model's
# 0.15 ms-per-sequence term added 38 ms at batch 256 where an H200 computes in 14.2 ms [K]; it
# was fitted on [Y]'s concurrency-16 TPOT, which is client-bound ([Y]'s concurrency 64 gave less
# throughput than 16 at 4x the TPOT, which no GPU-bound engine does).
CPU_STEP_BASE_S = 1.0e-3
CPU_PER_SEQ_S = 20e-6

# vLLM's API server parses and tokenizes a request and hands it to the engine core over ZMQ
# before the engine can schedule it; first-token output goes back the same way. Fitted on [Y]'s
# concurrency-1 TTFT p50 (13.98 ms for a ~45-token chat prompt on H100): the simulated server
# answers in ~9-10 ms without it (7.3 ms prefill step, HTTP and timer granularity), so 5 ms. The
# simulated server waits this long before submitting a request; the engine's TTFT metric starts
# after it, as vLLM's starts at ``add_request`` after the API server tokenized the prompt.
FRONTEND_LATENCY_S = 5.0e-3

# Achieved fraction of the interconnect's bandwidth in an NCCL ring all-reduce (bus bandwidth
# ~ 70-80 % of link peak in nccl-tests on NVLink; PCIe is similar or worse). Not calibrated
# against a measurement of this lab (docs/simulator-fidelity.md).
ETA_LINK = 0.7

# Latency of one small all-reduce: NVLink ~10 us, PCIe ~35 us (NCCL small-message latency in
# nccl-tests; PCIe adds host-bridge hops). Two all-reduces per layer (after attention and MLP).
ALLREDUCE_LATENCY_S = {"nvlink": 10e-6, "pcie": 35e-6}
ALLREDUCES_PER_LAYER = 2

# Point-to-point activation hand-off between pipeline stages (one per stage boundary per step);
# across nodes (LWS groups span nodes) this is an inter-node send: ~50 us latency + bytes over
# 100 Gb/s-class EFA/ENA (12.5 GB/s).
PP_HOP_LATENCY_S = 50e-6
PP_HOP_BYTES_PER_S = 12.5e9

# Memory vLLM keeps outside weights and KV cache on each GPU (CUDA context, CUDA graphs,
# activation peak of the profile run). vLLM logs show ~1-2 GiB on 24-80 GB GPUs; 1.5 GiB/GPU.
NON_KV_RESERVE_BYTES_PER_GPU = int(1.5 * GIB)

# Bytes per BF16 activation element.
_ACT_BYTES = 2


@dataclass(frozen=True)
class EngineConfig:
    """The engine-relevant ``vllm serve`` settings with the hardware they run on."""

    model: ModelSpec
    gpu: GpuSpec
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    calibration: StepCalibration | None = None

    @property
    def gpus(self) -> int:
        """GPUs the engine spans (TP x PP)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass(frozen=True)
class MemoryPlan:
    """How an engine's GPU memory is split, and the resulting limits."""

    weight_bytes_per_gpu: int
    kv_cache_bytes: int
    num_gpu_blocks: int
    max_model_len: int
    max_num_batched_tokens: int

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens the KV cache holds across all blocks."""
        return self.num_gpu_blocks * BLOCK_SIZE_TOKENS


@dataclass(frozen=True)
class StepShape:
    """What one engine step computes.

    Attributes:
        decode_seqs: sequences generating one token this step.
        decode_context_tokens: sum of those sequences' context lengths (KV read per step).
        prefill_tokens: prompt tokens computed this step (all chunks together).
        prefill_attention_pairs: sum over prefill chunks of chunk_len x (context after chunk),
            the query-key pairs of causal attention.
        prefill_seqs: sequences with a prefill chunk this step.
    """

    decode_seqs: int = 0
    decode_context_tokens: int = 0
    prefill_tokens: int = 0
    prefill_attention_pairs: int = 0
    prefill_seqs: int = 0

    @property
    def tokens(self) -> int:
        """Tokens scheduled this step (what vLLM's ``iteration_tokens_total`` observes)."""
        return self.decode_seqs + self.prefill_tokens

    @property
    def seqs(self) -> int:
        """Sequences in the step."""
        return self.decode_seqs + self.prefill_seqs


def _kv_bytes_per_token_per_gpu(cfg: EngineConfig) -> float:
    # TP splits the KV heads (each rank keeps at least one: vLLM replicates KV heads when
    # TP > KV heads); PP splits the layers.
    m = cfg.model
    kv_heads_per_gpu = max(1, m.kv_heads // cfg.tensor_parallel_size)
    return 2 * (m.layers / cfg.pipeline_parallel_size) * kv_heads_per_gpu * m.head_dim * _ACT_BYTES


def default_max_num_batched_tokens(gpu: GpuSpec) -> int:
    """vLLM's default per-step token budget for ``vllm serve`` on ``gpu``.

    vLLM's ``EngineArgs._set_default_args`` uses 8192 for the OpenAI server on GPUs with at
    least 70 GiB of memory and 2048 otherwise (chunked prefill on).
    """
    return 8192 if gpu.memory_bytes >= 70 * GIB else 2048


def plan_memory(cfg: EngineConfig) -> MemoryPlan:
    """Split GPU memory into weights, reserve and KV cache, refusing what vLLM would refuse.

    Raises:
        SimulatorError: TP not dividing the attention heads, bad sizes, weights that do not fit
            or a KV cache too small for one ``max_model_len`` sequence (vLLM refuses to start).
    """
    m, g = cfg.model, cfg.gpu
    tp, pp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size
    if tp < 1 or pp < 1:
        raise SimulatorError(f"tensor/pipeline parallel sizes must be >= 1, got TP={tp} PP={pp}")
    if m.heads % tp:
        raise SimulatorError(
            f"{m.hf_id}: total number of attention heads ({m.heads}) must be divisible by "
            f"tensor parallel size ({tp}); use one of: "
            + ", ".join(str(d) for d in range(1, m.heads + 1) if m.heads % d == 0 and d <= 16)
        )
    if pp > m.layers:
        raise SimulatorError(f"{m.hf_id}: pipeline parallel size {pp} > {m.layers} layers")
    if not 0 < cfg.gpu_memory_utilization <= 1:
        raise SimulatorError(
            f"--gpu-memory-utilization must be in (0, 1], got {cfg.gpu_memory_utilization}"
        )
    if cfg.max_num_seqs < 1:
        raise SimulatorError(f"--max-num-seqs must be >= 1, got {cfg.max_num_seqs}")
    max_model_len = cfg.max_model_len or m.max_position_embeddings
    if max_model_len > m.max_position_embeddings or max_model_len < 1:
        raise SimulatorError(
            f"--max-model-len {max_model_len} is outside 1..{m.max_position_embeddings} "
            f"(max_position_embeddings of {m.hf_id})"
        )
    budget = cfg.max_num_batched_tokens or default_max_num_batched_tokens(g)
    if budget < 1:
        raise SimulatorError(f"--max-num-batched-tokens must be >= 1, got {budget}")
    weights_per_gpu = m.weight_bytes // (tp * pp)
    usable_per_gpu = int(cfg.gpu_memory_utilization * g.memory_bytes)
    free_per_gpu = usable_per_gpu - weights_per_gpu - NON_KV_RESERVE_BYTES_PER_GPU
    if free_per_gpu <= 0:
        need = (m.weight_bytes / (tp * pp) + NON_KV_RESERVE_BYTES_PER_GPU) / GIB
        raise SimulatorError(
            f"{m.hf_id} does not fit: {need:.1f} GiB per GPU needed at TP={tp} PP={pp} but "
            f"{cfg.gpu_memory_utilization:.2f} x {g.memory_bytes / GIB:.0f} GiB "
            f"{g.name} = {usable_per_gpu / GIB:.1f} GiB; raise --tensor-parallel-size or "
            "--pipeline-parallel-size, or pick a larger GPU"
        )
    tokens = int(free_per_gpu / _kv_bytes_per_token_per_gpu(cfg))
    num_blocks = tokens // BLOCK_SIZE_TOKENS
    if num_blocks * BLOCK_SIZE_TOKENS < max_model_len:
        fit = num_blocks * BLOCK_SIZE_TOKENS
        raise SimulatorError(
            f"{m.hf_id}: max seq len ({max_model_len}) is larger than the {fit} tokens the KV "
            f"cache can hold on {tp * pp} x {g.name} (TP={tp} PP={pp}); pass "
            f"--max-model-len {fit} or less, or raise --gpu-memory-utilization"
        )
    return MemoryPlan(
        weight_bytes_per_gpu=weights_per_gpu,
        kv_cache_bytes=int(num_blocks * BLOCK_SIZE_TOKENS * _kv_bytes_per_token_per_gpu(cfg)),
        num_gpu_blocks=num_blocks,
        max_model_len=max_model_len,
        max_num_batched_tokens=budget,
    )


def _comm_s(cfg: EngineConfig, tokens: int) -> float:
    m, g = cfg.model, cfg.gpu
    tp, pp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size
    comm_s = 0.0
    if tp > 1:
        per_collective_bytes = 2 * (tp - 1) / tp * m.hidden * tokens * _ACT_BYTES
        collectives = ALLREDUCES_PER_LAYER * m.layers
        comm_s = collectives * (
            ALLREDUCE_LATENCY_S[g.interconnect]
            + per_collective_bytes / (ETA_LINK * g.interconnect_bytes_per_s)
        )
    if pp > 1:
        hop_bytes = m.hidden * tokens * _ACT_BYTES
        comm_s += (pp - 1) * (PP_HOP_LATENCY_S + hop_bytes / PP_HOP_BYTES_PER_S)
    return comm_s


def roofline_gpu_s(cfg: EngineConfig, shape: StepShape) -> float:
    """GPU time of one step from the achieved rates (no calibration file, no CPU part).

    Pipeline stages run one after another within a step (no micro-batch overlap), so PP adds
    hop latency and does not cut per-token time.
    """
    m = cfg.model
    tp = cfg.tensor_parallel_size
    if shape.tokens == 0:
        return 0.0
    rates = ACHIEVED[cfg.gpu.name]
    weights_s = m.step_weight_bytes / tp / rates.weight_bytes_per_s
    kv_bytes = (
        (shape.decode_context_tokens + shape.prefill_tokens)
        * _kv_bytes_per_token_per_gpu(cfg)
        * cfg.pipeline_parallel_size
    )
    kv_s = kv_bytes / rates.kv_bytes_per_s
    # lm_head runs only on the rows that are sampled (vLLM's logits_indices): one per sequence.
    gemm_flops = 2 * m.body_params * shape.tokens + 2 * m.embedding_params * shape.seqs
    gemm_s = gemm_flops / tp / rates.gemm_flops
    attn_flops = 4 * m.layers * m.heads * m.head_dim * shape.prefill_attention_pairs
    attn_s = attn_flops / tp / rates.attention_flops
    layers_s = m.layers * LAYER_LATENCY_S
    return layers_s + weights_s + kv_s + gemm_s + attn_s + _comm_s(cfg, shape.tokens)


def gpu_step_s(cfg: EngineConfig, shape: StepShape) -> float:
    """GPU time of one step: the calibration file's interpolation when given, else the model."""
    if shape.tokens == 0:
        return 0.0
    if cfg.calibration is not None:
        return cfg.calibration.gpu_step_s(cfg, shape)
    return roofline_gpu_s(cfg, shape)


def step_time_s(cfg: EngineConfig, shape: StepShape) -> float:
    """Wall-clock time of one engine step of ``shape`` on ``cfg``'s hardware.

    The GPU part plus the gap async scheduling leaves between steps, or the CPU part of the
    step when that is longer (async scheduling overlaps the two).
    """
    if shape.tokens == 0:
        return 0.0
    cpu_s = CPU_STEP_BASE_S + CPU_PER_SEQ_S * shape.seqs
    return max(gpu_step_s(cfg, shape) + STEP_GAP_S, cpu_s)


# --- calibration files -------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationRow:
    """One measured step: ``kind`` decode (``batch`` sequences at ``context`` tokens each),
    prefill (one sequence of ``tokens`` prompt tokens) or mixed (both in one step)."""

    kind: str
    batch: int
    context: int
    tokens: int
    ms: float


@dataclass(frozen=True)
class StepCalibration:
    """Measured step times of one model on one GPU, interpolated for any step shape.

    Decode steps interpolate piecewise-linearly in batch size (and in context between measured
    contexts; outside them the model's KV term carries the difference); prefill chunks
    piecewise-linearly in tokens (linear extrapolation past the last row, plus the model's
    attention term for context already in the cache). A step with both adds its decode and
    prefill times less the part both count once: the smallest decode step (weights and fixed
    latency), as the recorded H200 steps show a mixed step costing about that sum.
    """

    gpu: str
    model: str
    rows: tuple[CalibrationRow, ...]
    gpu_name: str = ""
    torch: str = ""
    source: str = ""
    path: str = ""
    _decode: dict[int, list[tuple[int, float]]] = field(default_factory=dict, compare=False)
    _prefill: list[tuple[int, float]] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        by_context: dict[int, list[tuple[int, float]]] = {}
        prefill: list[tuple[int, float]] = []
        for r in self.rows:
            if r.kind == "decode":
                by_context.setdefault(r.context, []).append((r.batch, r.ms / 1e3))
            elif r.kind == "prefill":
                prefill.append((r.tokens, r.ms / 1e3))
        where = self.path or "calibration"
        if not by_context or not prefill:
            raise SimulatorError(
                f"{where}: needs decode and prefill rows (kind, batch, context, tokens, ms); "
                "run benchmarks/gpu_step_profile.py to record them"
            )
        for points in by_context.values():
            points.sort()
        prefill.sort()
        self._decode.update(by_context)
        self._prefill.extend(prefill)

    def matches(self, cfg: EngineConfig) -> bool:
        """Whether this file describes ``cfg``'s GPU and model on one GPU."""
        return (
            self.gpu == cfg.gpu.name
            and self.model == cfg.model.alias
            and cfg.tensor_parallel_size == 1
            and cfg.pipeline_parallel_size == 1
        )

    def _decode_s(self, cfg: EngineConfig, batch: int, context: float) -> float:
        contexts = sorted(self._decode)

        def at(ctx: int) -> float:
            return _interp(self._decode[ctx], batch)

        if len(contexts) == 1 or context <= contexts[0] or context >= contexts[-1]:
            ctx = contexts[0] if context <= contexts[0] else contexts[-1]
            # Outside the measured contexts the model's KV-read term carries the difference.
            extra_kv = (context - ctx) * batch * _kv_bytes_per_token_per_gpu(cfg)
            return max(0.0, at(ctx) + extra_kv / ACHIEVED[cfg.gpu.name].kv_bytes_per_s)
        i = bisect.bisect_left(contexts, context)
        lo, hi = contexts[i - 1], contexts[i]
        w = (context - lo) / (hi - lo)
        return (1 - w) * at(lo) + w * at(hi)

    def gpu_step_s(self, cfg: EngineConfig, shape: StepShape) -> float:
        """Interpolated GPU time of ``shape`` (seconds)."""
        decode_s = prefill_s = 0.0
        if shape.decode_seqs:
            mean_ctx = shape.decode_context_tokens / shape.decode_seqs
            decode_s = self._decode_s(cfg, shape.decode_seqs, mean_ctx)
        if shape.prefill_tokens:
            prefill_s = _interp(self._prefill, shape.prefill_tokens)
            # Rows are single prompts from an empty cache; a later chunk also attends to the
            # context before it.
            own_pairs = shape.prefill_tokens * (shape.prefill_tokens + 1) // 2
            extra_pairs = max(0, shape.prefill_attention_pairs - own_pairs)
            m = cfg.model
            extra_flops = 4 * m.layers * m.heads * m.head_dim * extra_pairs
            prefill_s += extra_flops / ACHIEVED[cfg.gpu.name].attention_flops
        if decode_s and prefill_s:
            shared_s = min(ms for _, ms in self._decode[min(self._decode)])
            return decode_s + prefill_s - shared_s
        return decode_s + prefill_s


def _interp(points: list[tuple[int, float]], x: float) -> float:
    """Piecewise-linear through ``points`` (sorted by x); linear extrapolation at both ends."""
    if len(points) == 1:
        x0, y0 = points[0]
        return y0 * x / x0 if x > x0 else y0
    xs = [p[0] for p in points]
    i = bisect.bisect_left(xs, x)
    i = min(max(i, 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def load_calibration(path: str | Path) -> StepCalibration:
    """Read a calibration file written by ``benchmarks/gpu_step_profile.py``.

    Raises:
        SimulatorError: the file is missing, not JSON, or lacks the fields or rows needed.
    """
    p = Path(path)
    try:
        data: Any = json.loads(p.read_text())
    except OSError as exc:
        raise SimulatorError(f"calibration file {p}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SimulatorError(
            f"calibration file {p}: not JSON ({exc.msg}, line {exc.lineno})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise SimulatorError(f"calibration file {p}: expected an object with a 'rows' list")
    for key in ("gpu", "model"):
        if not isinstance(data.get(key), str):
            raise SimulatorError(
                f"calibration file {p}: '{key}' must name the catalogue {key} (e.g. h200, "
                "llama-3.1-8b)"
            )
    rows = []
    for i, row in enumerate(data["rows"]):
        try:
            rows.append(
                CalibrationRow(
                    kind=str(row["kind"]),
                    batch=int(row.get("batch", 1)),
                    context=int(row.get("context", 0)),
                    tokens=int(row.get("tokens", row.get("batch", 1))),
                    ms=float(row["ms"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise SimulatorError(
                f"calibration file {p}: row {i} needs kind and ms (and batch, context, tokens)"
            ) from None
        if not math.isfinite(rows[-1].ms) or rows[-1].ms <= 0:
            raise SimulatorError(f"calibration file {p}: row {i} has ms={row['ms']!r}")
    return StepCalibration(
        gpu=data["gpu"].lower(),
        model=data["model"],
        rows=tuple(rows),
        gpu_name=str(data.get("gpu_name", "")),
        torch=str(data.get("torch", "")),
        source=str(data.get("source", "")),
        path=str(p),
    )


# --- group start time --------------------------------------------------------------------------
# A new GPU group on EKS goes through four stages one after the other (each blocks the next):
# node provisioning, container image pull, weight load, and vLLM's own start-up. Write-ups of
# GPU cold starts on Kubernetes put the whole at several minutes to 10+ minutes (e.g.
# dev.to/manikandan_t_6d72e32ac4e8 "The GPU Cold Starts Nobody Warns You About", scaleops.com
# "Reducing GPU cold start times in Kubernetes": "eight minutes"). None is measured by this lab.

# Node provisioning to Ready: EC2 launch, GPU AMI boot, NVIDIA driver and device plugin,
# kubelet registration. "Minutes" in the write-ups above; 90 s for one GPU node is an estimate.
NODE_LAUNCH_S = 90.0

# "Modern inference containers (vLLM + PyTorch + CUDA + NCCL) are 10-20 GB" (dev.to write-up
# above); 10 GB to download and unpack at ~150 MB/s (containerd extracts layers one at a
# time, so the NIC is rarely the limit). A node that already holds the image skips this.
IMAGE_BYTES = 10e9
IMAGE_PULL_BYTES_PER_S = 150e6

# Weight read rate per node: an EBS gp3 volume gives 125 MiB/s unless more is provisioned (up
# to 1,000-2,000 MiB/s; AWS EC2 CreateVolume API "Throughput", valid range 125-2000 MiB/s);
# in-region S3 reaches ~1 GB/s with a parallel loader. 500 MB/s by default.
WEIGHT_STORAGE_BYTES_PER_S = 500e6

# vLLM's start-up once the weights are read: torch.compile (cached after a first start), the
# memory-profiling run and CUDA-graph capture (tensorfuse.io "Reducing GPU cold start" breaks
# these down for Llama-3.1-8B on L40S). 45 s, an estimate.
ENGINE_WARMUP_S = 45.0


def group_start_time_s(
    model: ModelSpec,
    instance: InstanceType,
    *,
    nodes: int = 1,
    node_launch: bool = True,
    image_cached: bool = False,
    storage_bytes_per_s: float = WEIGHT_STORAGE_BYTES_PER_S,
) -> float:
    """Seconds from "scale up by one group" to the group serving, on real GPU nodes.

    Node launch, image pull, weight load and vLLM's warm-up run one after the other; the nodes
    of a multi-node group (one per LWS pod) do the same in parallel, each loading its share of
    the weights, so the group is as slow as one node.

    Args:
        model: the model the group serves.
        instance: the node type (one node per LWS pod).
        nodes: nodes in the group (the LWS ``size``).
        node_launch: whether new nodes must be launched (False: they are already in the cluster).
        image_cached: whether the nodes already hold the vLLM image.
        storage_bytes_per_s: per-node read rate of the weights.

    Raises:
        SimulatorError: a non-positive node count or storage rate.
    """
    if nodes < 1:
        raise SimulatorError(f"a group needs at least one node, got nodes={nodes}")
    if storage_bytes_per_s <= 0:
        raise SimulatorError(f"storage_bytes_per_s must be > 0, got {storage_bytes_per_s}")
    start_s = NODE_LAUNCH_S if node_launch else 0.0
    if not image_cached:
        start_s += IMAGE_BYTES / IMAGE_PULL_BYTES_PER_S
    start_s += model.weight_bytes / nodes / storage_bytes_per_s
    # Weights also cross PCIe into the GPUs (~20 GB/s per GPU on g5..p5), in parallel per GPU.
    start_s += model.weight_bytes / (nodes * instance.gpus) / 20e9
    return start_s + ENGINE_WARMUP_S
