"""Build the tiny random-weight Llama model that real vLLM engines serve on the local twin.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a text shipped with the lab and
a Llama config with random weights (seeded) is saved next to it, with a chat template. The build
runs inside the vLLM venv (it needs ``torch``, ``tokenizers`` and ``transformers``) and is
cached: the same spec and seed reuse the folder built before.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from platformdirs import user_cache_dir

from labutils.errors import ConfigError
from labutils.realengine.env import RealEngineEnv, check_environment

__all__ = ["CORPUS_PATH", "TinyModel", "TinyModelSpec", "build_tiny_model", "default_model_dir"]

_HERE = Path(__file__).resolve().parent
CORPUS_PATH = _HERE / "data" / "tiny-corpus.txt"
_BUILDER = _HERE / "_build_tiny_model.py"
_INFO_FILE = "lab-tiny-model.json"
_MAX_HIDDEN_SIZE = 128  # the model only has to exercise the engine, not to be useful


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model; every field is part of the cache key."""

    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_model_len: int = 1024

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a shape that is not tiny or not a valid Llama."""
        if not 0 < self.hidden_size <= _MAX_HIDDEN_SIZE:
            raise ConfigError(
                f"tiny model hidden_size={self.hidden_size}: choose 1..{_MAX_HIDDEN_SIZE}"
            )
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            raise ConfigError(
                f"tiny model num_heads={self.num_heads} must divide hidden_size={self.hidden_size}"
            )
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"tiny model num_kv_heads={self.num_kv_heads} must divide "
                f"num_heads={self.num_heads}"
            )
        for name in ("vocab_size", "intermediate_size", "num_layers", "max_model_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"tiny model {name}={getattr(self, name)} must be positive")
        if self.vocab_size < 300:
            raise ConfigError(
                f"tiny model vocab_size={self.vocab_size}: a byte-level BPE needs at least 300 "
                "(256 bytes plus special tokens and merges)"
            )

    def builder_args(self) -> list[str]:
        """Flags of ``_build_tiny_model.py`` for this spec."""
        return [
            f"--seed={self.seed}",
            f"--vocab-size={self.vocab_size}",
            f"--hidden-size={self.hidden_size}",
            f"--intermediate-size={self.intermediate_size}",
            f"--num-layers={self.num_layers}",
            f"--num-heads={self.num_heads}",
            f"--num-kv-heads={self.num_kv_heads}",
            f"--max-position-embeddings={self.max_model_len}",
        ]


@dataclass(frozen=True)
class TinyModel:
    """A built tiny model folder (a Hugging Face model directory vLLM can serve).

    Attributes:
        path: the folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...).
        spec: what it was built from.
        vocab_size: the trained tokenizer's size (at most ``spec.vocab_size``).
        num_parameters: parameter count of the random-weight model.
        weights_sha256: digest of ``model.safetensors`` (equal for equal specs).
        tokenizer_sha256: digest of ``tokenizer.json``.
    """

    path: Path
    spec: TinyModelSpec
    vocab_size: int
    num_parameters: int
    weights_sha256: str
    tokenizer_sha256: str

    def to_frame(self) -> pd.DataFrame:
        """One row describing the model."""
        row: dict[str, Any] = {"path": str(self.path), **asdict(self.spec)}
        row.update(
            trained_vocab_size=self.vocab_size,
            num_parameters=self.num_parameters,
            weights_sha256=self.weights_sha256,
        )
        return pd.DataFrame([row])


def default_model_dir(spec: TinyModelSpec) -> Path:
    """Cache folder for ``spec``: ``$LAB_TINY_MODEL_DIR`` or the user cache, one per spec."""
    root = os.environ.get("LAB_TINY_MODEL_DIR") or Path(user_cache_dir("vllm-lws-lab")) / "models"
    name = (
        f"tiny-llama-v{spec.vocab_size}-h{spec.hidden_size}-i{spec.intermediate_size}"
        f"-l{spec.num_layers}-a{spec.num_heads}-kv{spec.num_kv_heads}"
        f"-ctx{spec.max_model_len}-seed{spec.seed}"
    )
    return Path(root) / name


def _corpus_sha256() -> str:
    # Part of the cache key: a changed training text means a different tokenizer.
    return hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest()


def _read_info(folder: Path, spec: TinyModelSpec) -> TinyModel | None:
    info_path = folder / _INFO_FILE
    required = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not info_path.exists() or not all((folder / f).exists() for f in required):
        return None
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError:
        return None
    built_from = (
        info.get("seed"),
        info.get("vocab_size_limit"),
        info.get("hidden_size"),
        info.get("num_layers"),
        info.get("num_heads"),
        info.get("max_model_len"),
        info.get("corpus_sha256"),
    )
    wanted = (
        spec.seed,
        spec.vocab_size,
        spec.hidden_size,
        spec.num_layers,
        spec.num_heads,
        spec.max_model_len,
        _corpus_sha256(),
    )
    if built_from != wanted:
        return None
    return TinyModel(
        path=folder.resolve(),
        spec=spec,
        vocab_size=int(info["vocab_size"]),
        num_parameters=int(info["num_parameters"]),
        weights_sha256=str(info["weights_sha256"]),
        tokenizer_sha256=str(info["tokenizer_sha256"]),
    )


def build_tiny_model(
    out_dir: str | Path | None = None,
    spec: TinyModelSpec | None = None,
    *,
    env: RealEngineEnv | None = None,
    force: bool = False,
    timeout_s: float = 300.0,
) -> TinyModel:
    """Build (or reuse) the tiny random-weight Llama model described by ``spec``.

    Args:
        out_dir: target folder (default :func:`default_model_dir`).
        spec: model shape and seed (default :class:`TinyModelSpec()`).
        env: a checked vLLM venv (default: :func:`check_environment`).
        force: rebuild even if ``out_dir`` already holds this spec.
        timeout_s: limit for the build process.

    Raises:
        ConfigError: invalid spec, no usable vLLM venv, or the build failed (last error line).
    """
    spec = spec or TinyModelSpec()
    spec.validate()
    folder = Path(out_dir) if out_dir else default_model_dir(spec)
    if not force and (cached := _read_info(folder, spec)) is not None:
        return cached
    env = env or check_environment()
    run_env = {
        **os.environ,
        "PYTHONNOUSERSITE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    run_env.pop("PYTHONPATH", None)
    cmd = [str(env.python), str(_BUILDER), str(folder), f"--corpus={CORPUS_PATH}"]
    try:
        done = subprocess.run(
            cmd + spec.builder_args(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=run_env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"building the tiny model in {folder} took over {timeout_s:.0f} s; retry when "
            "the machine is less busy"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ConfigError(
            f"building the tiny model in {folder} failed: "
            f"{lines[-1] if lines else 'exit ' + str(done.returncode)}"
        )
    model = _read_info(folder, spec)
    if model is None:
        raise ConfigError(f"{folder}: the model builder finished but left no {_INFO_FILE}")
    return model
