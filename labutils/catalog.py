"""GPUs, models and EC2 instance types the lab knows, from public datasheets and model configs.

Sources: NVIDIA datasheets for A10G, L4, L40S, A100 and H100/H200 (dense BF16 without
sparsity); Hugging Face ``config.json`` of each model;
EC2 instance-type pages for GPUs per instance. Prices are *not* here: they change, so they live
in the dated, instructor-editable ``labutils/data/prices.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from labutils.errors import ConfigError

__all__ = [
    "GPUS",
    "INSTANCE_TYPES",
    "MODELS",
    "GpuSpec",
    "InstanceType",
    "ModelSpec",
    "gpu",
    "instance_type",
    "load_prices",
    "model",
]

GIB = 1024**3


@dataclass(frozen=True)
class GpuSpec:
    """One GPU's datasheet numbers (dense BF16)."""

    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: float
    bf16_flops: float
    interconnect: str  # "nvlink" or "pcie"
    interconnect_bytes_per_s: float


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape, from its Hugging Face config."""

    hf_id: str
    alias: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position_embeddings: int
    chat: bool
    # Whether lm_head shares the embedding matrix (``tie_word_embeddings`` in the config).
    tied_embeddings: bool = False
    # Bytes per parameter of the linear layers' weights: 2 for BF16, 1 for FP8 checkpoints. The
    # embedding table and lm_head stay BF16 in vLLM's FP8 checkpoints ("all Linear modules
    # (except for the final lm_head) have their weights quantized down to FP8_E4M3", vLLM docs
    # features/quantization/fp8), so only ``body_params`` use this.
    body_bytes_per_param: float = 2.0

    @property
    def weight_bytes(self) -> int:
        """Bytes the GPUs hold: the body at ``body_bytes_per_param``, embedding and lm_head BF16."""
        return int(self.body_params * self.body_bytes_per_param + self._head_params * 2)

    @property
    def _head_params(self) -> int:
        # embedding table, plus lm_head when it is a separate matrix
        return self.embedding_params * (1 if self.tied_embeddings else 2)

    @property
    def embedding_params(self) -> int:
        """Parameters of the token-embedding table (``vocab x hidden``)."""
        return self.vocab * self.hidden

    @property
    def step_weight_bytes(self) -> int:
        """Bytes of weights one engine step reads from HBM.

        A step gathers only the embedding rows of its tokens (negligible) but multiplies by every
        other matrix, lm_head included; with tied embeddings lm_head *is* the table, so it is read
        once. For Llama-3.1-8B: (8.03e9 - 128256 x 4096) x 2 = 15.01 GB, as counted for the H200
        step recording (tests/data/h200-llama-3.1-8b-step-kernels.jsonl, ``weights`` row).
        """
        if self.tied_embeddings:
            return self.weight_bytes
        return int(self.body_params * self.body_bytes_per_param + self.embedding_params * 2)

    @property
    def body_params(self) -> int:
        """Parameters multiplied by every token: all but the embedding table and lm_head."""
        lm_head = self.embedding_params
        return int(self.params - (lm_head if self.tied_embeddings else 2 * lm_head))

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token in BF16: 2 (K and V) x layers x KV heads x head dim x 2."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


@dataclass(frozen=True)
class InstanceType:
    """An EC2 GPU instance type."""

    name: str
    gpu: str
    gpus: int
    vcpus: int
    memory_gib: int


_GB = 1e9
# Memory in GB as the datasheets give it (A10G "24 GB" is 24 GiB of usable GDDR6 in practice;
# we use the GiB figure nvidia-smi reports, rounded down, to stay conservative).
GPUS: dict[str, GpuSpec] = {
    "a10g": GpuSpec("a10g", 22 * GIB, 600 * _GB, 70e12, "pcie", 32 * _GB),
    "l4": GpuSpec("l4", 22 * GIB, 300 * _GB, 121e12, "pcie", 32 * _GB),
    "l40s": GpuSpec("l40s", 44 * GIB, 864 * _GB, 362e12, "pcie", 32 * _GB),
    "a100-40gb": GpuSpec("a100-40gb", 40 * GIB, 1555 * _GB, 312e12, "nvlink", 600 * _GB),
    "a100-80gb": GpuSpec("a100-80gb", 80 * GIB, 2039 * _GB, 312e12, "nvlink", 600 * _GB),
    "h100": GpuSpec("h100", 80 * GIB, 3350 * _GB, 989e12, "nvlink", 900 * _GB),
    "h200": GpuSpec("h200", 141 * GIB, 4800 * _GB, 989e12, "nvlink", 900 * _GB),
}

MODELS: dict[str, ModelSpec] = {
    m.alias: m
    for m in (
        ModelSpec(
            "meta-llama/Llama-2-7b-chat-hf",
            "llama-2-7b",
            6.74e9,
            32,
            4096,
            32,
            32,
            128,
            32000,
            4096,
            True,
        ),
        ModelSpec(
            "meta-llama/Llama-2-13b-chat-hf",
            "llama-2-13b",
            13.0e9,
            40,
            5120,
            40,
            40,
            128,
            32000,
            4096,
            True,
        ),
        ModelSpec(
            "meta-llama/Llama-3.1-8B-Instruct",
            "llama-3.1-8b",
            8.03e9,
            32,
            4096,
            32,
            8,
            128,
            128256,
            131072,
            True,
        ),
        ModelSpec(
            "meta-llama/Llama-3.1-70B-Instruct",
            "llama-3.1-70b",
            70.6e9,
            80,
            8192,
            64,
            8,
            128,
            128256,
            131072,
            True,
        ),
        # Llama-3.1-70B-Instruct with FP8 (E4M3) weights in every linear layer, lm_head and
        # embeddings BF16: RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8 (formerly neuralmagic/),
        # an llm-compressor checkpoint vLLM serves as is (huggingface.co/RedHatAI/
        # Meta-Llama-3.1-70B-Instruct-FP8: 15 safetensors shards of ~4.9 GB, ~70 GB in all;
        # this spec counts 68.5e9 x 1 + 2 x 1.05e9 x 2 = 72.7 GB). vLLM runs it as W8A8 on Ada
        # and Hopper (L4, L40S, H100, H200: compute capability >= 8.9) and as weight-only W8A16
        # FP8 Marlin on Ampere (A10G, A100) (docs.vllm.ai features/quantization/fp8, vLLM PR
        # #5975). The simulator scales the weight bytes (what decode steps are bound by) and the
        # memory plan; it computes GEMMs at the BF16 rate, which is right for Ampere's W8A16 and
        # conservative for Ada/Hopper, whose FP8 tensor cores double the dense peak.
        ModelSpec(
            "RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8",
            "llama-3.1-70b-fp8",
            70.6e9,
            80,
            8192,
            64,
            8,
            128,
            128256,
            131072,
            True,
            body_bytes_per_param=1.0,
        ),
        # Qwen3-8B: Hugging Face config.json (36 layers, hidden 4096, 32 heads, 8 KV heads, head
        # dim 128, vocab 151936, max_position_embeddings 40960, untied lm_head) and model card
        # (8.2 B parameters, 6.95 B without embedding and lm_head: 8.19e9 below). In the catalogue
        # because published vLLM sweeps of it on H100 check the simulator
        # (benchmarks/sim_fidelity.py).
        ModelSpec(
            "Qwen/Qwen3-8B",
            "qwen3-8b",
            8.19e9,
            36,
            4096,
            32,
            8,
            128,
            151936,
            40960,
            True,
        ),
        ModelSpec(
            "mistralai/Mistral-7B-Instruct-v0.3",
            "mistral-7b",
            7.25e9,
            32,
            4096,
            32,
            8,
            128,
            32768,
            32768,
            True,
        ),
    )
}

INSTANCE_TYPES: dict[str, InstanceType] = {
    i.name: i
    for i in (
        InstanceType("g5.xlarge", "a10g", 1, 4, 16),
        InstanceType("g5.2xlarge", "a10g", 1, 8, 32),
        InstanceType("g5.12xlarge", "a10g", 4, 48, 192),
        InstanceType("g5.24xlarge", "a10g", 4, 96, 384),
        InstanceType("g5.48xlarge", "a10g", 8, 192, 768),
        InstanceType("g6.xlarge", "l4", 1, 4, 16),
        InstanceType("g6.12xlarge", "l4", 4, 48, 192),
        InstanceType("g6.48xlarge", "l4", 8, 192, 768),
        InstanceType("g6e.xlarge", "l40s", 1, 4, 32),
        InstanceType("g6e.12xlarge", "l40s", 4, 48, 384),
        InstanceType("g6e.48xlarge", "l40s", 8, 192, 1536),
        InstanceType("p4d.24xlarge", "a100-40gb", 8, 96, 1152),
        InstanceType("p4de.24xlarge", "a100-80gb", 8, 96, 1152),
        InstanceType("p5.48xlarge", "h100", 8, 192, 2048),
        InstanceType("p5e.48xlarge", "h200", 8, 192, 2048),
        # p5en: the same 8 x H200 with newer CPUs and EFAv3; unlike p5e it has an on-demand price
        # (labutils/data/prices.yaml).
        InstanceType("p5en.48xlarge", "h200", 8, 192, 2048),
    )
}


def _choices(names: object) -> str:
    return ", ".join(sorted(names))  # type: ignore[call-overload]


def gpu(name: str) -> GpuSpec:
    """Look up a GPU by name (``a10g``, ``l4``, ``l40s``, ``a100-40gb``, ``a100-80gb``, ...)."""
    key = name.lower().replace("_", "-")
    if key not in GPUS:
        raise ConfigError(f"unknown GPU {name!r}; choose one of: {_choices(GPUS)}")
    return GPUS[key]


def model(name: str) -> ModelSpec:
    """Look up a model by Hugging Face id (as ``vllm serve`` takes it) or short alias."""
    key = name.strip()
    if key in MODELS:
        return MODELS[key]
    for spec in MODELS.values():
        if spec.hf_id.lower() == key.lower() or spec.hf_id.split("/")[-1].lower() == key.lower():
            return spec
    choices = _choices([m.hf_id for m in MODELS.values()] + list(MODELS))
    raise ConfigError(f"unknown model {name!r}; choose one of: {choices}")


def instance_type(name: str) -> InstanceType:
    """Look up an EC2 GPU instance type (``g5.12xlarge``, ``p4d.24xlarge``, ...)."""
    if name not in INSTANCE_TYPES:
        raise ConfigError(
            f"unknown instance type {name!r}; choose one of: {_choices(INSTANCE_TYPES)}"
        )
    return INSTANCE_TYPES[name]


def load_prices() -> dict[str, object]:
    """Read the dated on-demand price table (``labutils/data/prices.yaml``).

    Returns:
        The parsed file: ``{"as_of": ..., "source": ..., "region": ..., "usd_per_hour": {...}}``.
    """
    text = resources.files("labutils").joinpath("data/prices.yaml").read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "usd_per_hour" not in data:
        raise ConfigError("labutils/data/prices.yaml: expected a mapping with 'usd_per_hour'")
    return data
