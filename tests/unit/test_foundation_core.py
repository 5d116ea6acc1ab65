"""Config, catalogue and vllm-serve parsing."""

from __future__ import annotations

import pytest

from labutils import catalog
from labutils.config import lab_target, load_config
from labutils.errors import ConfigError
from labutils.vllm_args import parse_vllm_serve


def test_lab_target_defaults_to_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_TARGET", raising=False)
    assert lab_target() == "local"
    monkeypatch.setenv("LAB_TARGET", "EKS")
    assert lab_target() == "eks"


def test_lab_target_rejects_unknown_with_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TARGET", "gke")
    with pytest.raises(ConfigError, match="local, eks"):
        lab_target()


def test_kv_bytes_per_token_matches_reference_table() -> None:
    # gpus-and-models.md: Llama-2-13B 800 KiB, Llama-3.1-8B 128 KiB, Llama-3.1-70B 320 KiB.
    assert catalog.model("llama-2-13b").kv_bytes_per_token == 800 * 1024
    assert catalog.model("meta-llama/Llama-3.1-8B-Instruct").kv_bytes_per_token == 128 * 1024
    assert catalog.model("Llama-3.1-70B-Instruct").kv_bytes_per_token == 320 * 1024


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"llama-3\.1-8b"):
        catalog.model("gpt-5")


def test_prices_are_dated() -> None:
    prices = catalog.load_prices()
    assert prices["as_of"]
    assert set(prices["usd_per_hour"]) <= set(catalog.INSTANCE_TYPES)  # type: ignore[arg-type]


def test_parse_vllm_serve_accepts_vllm_flag_spellings() -> None:
    args = parse_vllm_serve(
        [
            "vllm",
            "serve",
            "m/x",
            "--tensor_parallel_size=4",
            "-pp",
            "2",
            "--max-num-seqs",
            "64",
            "--headless",
            "--enable-prefix-caching",
        ]
    )
    assert (args.model, args.tensor_parallel_size, args.pipeline_parallel_size) == ("m/x", 4, 2)
    assert args.max_num_seqs == 64 and args.headless
    assert args.unknown == ("--enable-prefix-caching",)


def test_parse_vllm_serve_unwraps_sh_c_and_rejects_other_commands() -> None:
    args = parse_vllm_serve(["sh", "-c", "exec vllm serve m/y --port 9000"])
    assert args.port == 9000 and args.name == "m/y"
    with pytest.raises(ConfigError, match="not a 'vllm serve'"):
        parse_vllm_serve(["python", "-m", "vllm.entrypoints.openai.api_server"])
    with pytest.raises(ConfigError, match="tensor-parallel-size"):
        parse_vllm_serve(["vllm", "serve", "m", "--tensor-parallel-size", "four"])


def test_load_config_reports_bad_yaml_with_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "lab.yaml"
    bad.write_text("zones: [a, b\nreplicas: 2\n")
    with pytest.raises(ConfigError, match=r"lab.yaml:\d+"):
        load_config(bad)
    bad.write_text("replicas: -1\n")
    with pytest.raises(ConfigError, match="replicas"):
        load_config(bad)
