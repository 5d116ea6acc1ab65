"""Fixtures of the contract tier: a real vLLM (CPU build) serving the tiny model.

Skipped with the reason when the vLLM venv is absent (``make real-engine`` installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labutils.errors import ConfigError
from labutils.realengine import (
    RealEngine,
    RealEngineEnv,
    TinyModel,
    build_tiny_model,
    check_environment,
    start_engine,
)

SERVED_MODEL_NAME = "tiny-llama"


@pytest.fixture(scope="session")
def vllm_env() -> RealEngineEnv:
    try:
        return check_environment()
    except ConfigError as exc:
        pytest.skip(f"real-engine tier needs the vLLM CPU venv: {exc}")


@pytest.fixture(scope="session")
def tiny_model(vllm_env: RealEngineEnv) -> TinyModel:
    return build_tiny_model(env=vllm_env)


@pytest.fixture(scope="session")
def real_engine(
    vllm_env: RealEngineEnv, tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealEngine]:
    log_dir: Path = tmp_path_factory.mktemp("vllm-logs")
    engine = start_engine(
        tiny_model,
        served_model_name=SERVED_MODEL_NAME,
        env=vllm_env,
        log_dir=log_dir,
        name="contract-vllm",
    )
    try:
        yield engine
    finally:
        engine.stop()
