"""GPU-grounded performance model of one vLLM engine: memory plan and step time (roofline).

Every constant is listed here with its source. The model is the standard roofline estimate
(see ``../shared/reference/gpus-and-models.md``): a step reads the weights (and the KV cache of
every scheduled sequence) once from HBM, and does ``2 x params`` FLOPs per scheduled token; its
time is the larger of the two bounds, plus tensor-parallel all-reduces and a fixed per-step
overhead. ``benchmarks/sim_fidelity.py`` compares it with published vLLM measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from labutils.catalog import GIB, GpuSpec, ModelSpec
from labutils.errors import SimulatorError

__all__ = [
    "BLOCK_SIZE_TOKENS",
    "EngineConfig",
    "MemoryPlan",
    "StepShape",
    "default_max_num_batched_tokens",
    "plan_memory",
    "step_time_s",
]

# vLLM's default KV-cache block size (tokens per block); vLLM docs "--block-size", default 16.
BLOCK_SIZE_TOKENS = 16

# Fraction of peak HBM bandwidth a decode step achieves. Calibrated so that Llama-3.1-8B BF16 on
# one A100-40GB at batch 1 gives ~75 output tokens/s (13.3 ms/token) as measured with vLLM 0.23
# (johnmusgrave.com/p/vllm-throughput-latency-sweep-on; gpus-and-models.md): 16.06 GB /
# (0.85 x 1555 GB/s) + 0.14 ms KV read + 1.15 ms overheads = 13.4 ms.
ETA_BANDWIDTH = 0.85

# Fraction of dense BF16 peak reached by large GEMMs (prefill, big decode batches). cuBLAS BF16
# GEMMs of 8B-70B shapes reach ~0.6-0.8 of peak; 0.65 is the value at which the A100 C=8 sweep
# point of the calibration source is matched best without exceeding the roofline (the
# published C=8/C=1 ratio of 6.6 would need prefill at ~the A100's full peak; see
# benchmarks/sim_fidelity.py, where the remaining -15 % is reported).
ETA_FLOPS = 0.65

# Fixed CPU/launch overhead per engine step (scheduler, sampler, CUDA-graph replay). vLLM V1
# with CUDA graphs spends roughly 0.5-2 ms per step outside the GPU kernels; 1 ms is used and
# is part of the A100 calibration above.
STEP_OVERHEAD_S = 1.0e-3

# CPU time per scheduled sequence per step (vLLM V1's input preparation, sampling metadata and
# output processing/detokenisation grow with the batch). Fitted to the H100 C=16 TPOT of the
# InferenceBench sweep (see benchmarks/sim_fidelity.py); the order of magnitude matches the
# ~0.1 ms/request per-step CPU cost seen in vLLM V1 profiles.
STEP_OVERHEAD_PER_SEQ_S = 0.15e-3

# Achieved fraction of the interconnect's bandwidth in an NCCL ring all-reduce (bus bandwidth
# ~ 70-80 % of link peak in nccl-tests on NVLink; PCIe is similar or worse).
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


def step_time_s(cfg: EngineConfig, shape: StepShape) -> float:
    """Wall-clock time of one engine step of ``shape`` on ``cfg``'s hardware.

    Memory bound: every GPU reads its share of the weights and of the scheduled sequences' KV
    cache. Compute bound: ``2 x params`` FLOPs per token plus causal attention
    (``4 x layers x hidden`` FLOPs per query-key pair). Pipeline stages run one after another
    for a step (no micro-batch overlap), so PP adds hop latency and does not cut per-token time.
    """
    m, g = cfg.model, cfg.gpu
    tp, pp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size
    tokens = shape.tokens
    if tokens == 0:
        return 0.0
    # Per GPU, summed over the PP stages a step passes through in sequence.
    weight_bytes = m.weight_bytes / tp
    kv_read_bytes = (
        (shape.decode_context_tokens + shape.prefill_tokens) * _kv_bytes_per_token_per_gpu(cfg) * pp
    )
    memory_s = (weight_bytes + kv_read_bytes) / (ETA_BANDWIDTH * g.bandwidth_bytes_per_s)
    attention_pairs = shape.prefill_attention_pairs + shape.decode_context_tokens
    flops = 2 * m.params * tokens + 4 * m.layers * m.hidden * attention_pairs
    compute_s = flops / tp / (ETA_FLOPS * g.bf16_flops)
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
    seqs = shape.decode_seqs + shape.prefill_seqs
    return max(memory_s, compute_s) + comm_s + STEP_OVERHEAD_S + STEP_OVERHEAD_PER_SEQ_S * seqs
