"""Tiny-model spec checks, cache reuse and builder failures (no vLLM venv needed)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labutils.errors import ConfigError
from labutils.realengine.env import RealEngineEnv
from labutils.realengine.model import (
    CORPUS_PATH,
    TinyModelSpec,
    build_tiny_model,
    default_model_dir,
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TinyModelSpec(hidden_size=256), r"hidden_size=256: choose 1\.\.128"),
        (TinyModelSpec(num_heads=3), r"num_heads=3 must divide hidden_size=128"),
        (TinyModelSpec(num_kv_heads=3), r"num_kv_heads=3 must divide num_heads=4"),
        (TinyModelSpec(num_layers=0), r"num_layers=0 must be positive"),
        (TinyModelSpec(vocab_size=100), r"vocab_size=100: a byte-level BPE needs at least 300"),
    ],
)
def test_invalid_specs_are_refused(spec: TinyModelSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec.validate()


def test_default_spec_is_valid_and_builder_args_carry_every_field() -> None:
    spec = TinyModelSpec(seed=3)
    spec.validate()
    args = spec.builder_args()
    assert "--seed=3" in args
    assert "--hidden-size=128" in args
    assert "--max-position-embeddings=1024" in args


def test_cache_folder_differs_per_seed_and_shape(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAB_TINY_MODEL_DIR", str(tmp_path))
    a = default_model_dir(TinyModelSpec(seed=0))
    assert a.parent == tmp_path
    assert a != default_model_dir(TinyModelSpec(seed=1))
    assert a != default_model_dir(TinyModelSpec(num_layers=3))


def test_corpus_ships_with_the_package() -> None:
    assert CORPUS_PATH.stat().st_size > 2000


def _fake_built(folder: Path, spec: TinyModelSpec) -> None:
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    info = {
        "seed": spec.seed,
        "vocab_size_limit": spec.vocab_size,
        "corpus_sha256": hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest(),
        "hidden_size": spec.hidden_size,
        "num_layers": spec.num_layers,
        "num_heads": spec.num_heads,
        "max_model_len": spec.max_model_len,
        "vocab_size": 600,
        "num_parameters": 1234,
        "weights_sha256": "ab",
        "tokenizer_sha256": "cd",
    }
    (folder / "lab-tiny-model.json").write_text(json.dumps(info))


def test_built_folder_is_reused_without_the_venv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAB_VLLM_VENV", str(tmp_path / "no-venv"))
    spec = TinyModelSpec(seed=5)
    _fake_built(tmp_path / "m", spec)
    model = build_tiny_model(tmp_path / "m", spec)
    assert model.num_parameters == 1234
    assert model.vocab_size == 600
    assert model.to_frame().loc[0, "seed"] == 5
    # Another seed is not the cached model: it needs a build, hence the venv.
    with pytest.raises(ConfigError, match="no vLLM venv"):
        build_tiny_model(tmp_path / "m", TinyModelSpec(seed=6))
    # Nor is a model trained on another text (the corpus digest is part of the cache key).
    info_path = tmp_path / "m" / "lab-tiny-model.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "corpus_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="no vLLM venv"):
        build_tiny_model(tmp_path / "m", spec)


def test_builder_failure_reports_its_last_error_line(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = RealEngineEnv(venv, venv / "bin" / "python", "0.32.0", "2.13.0+cpu", True)
    with pytest.raises(ConfigError, match=r"failed: ModuleNotFoundError: No module named"):
        build_tiny_model(tmp_path / "m", TinyModelSpec(), env=env)
