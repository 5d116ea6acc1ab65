"""The real engine's command line and environment (no processes started)."""

from __future__ import annotations

from pathlib import Path

from labutils.realengine.launcher import (
    API_SERVER_MODULE,
    KV_CACHE_MEMORY_BYTES,
    engine_command,
    engine_environment,
)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_command_runs_the_module_with_lean_flags_on_loopback() -> None:
    argv = engine_command("/v/bin/python", "/m", port=8123, served_model_name="tiny")
    assert argv[:3] == ["/v/bin/python", "-m", API_SERVER_MODULE]
    assert _flag(argv, "--host") == "127.0.0.1"
    assert _flag(argv, "--port") == "8123"
    assert _flag(argv, "--model") == "/m"
    assert _flag(argv, "--served-model-name") == "tiny"
    assert _flag(argv, "--kv-cache-memory-bytes") == str(KV_CACHE_MEMORY_BYTES)
    assert _flag(argv, "--max-model-len") == "1024"
    assert "--enforce-eager" in argv
    # Stats logging feeds /metrics in the V1 engine: disabling it would empty the vllm: families.
    assert "--disable-log-stats" not in argv
    assert "--max-num-batched-tokens" not in argv


def test_command_passes_batch_limits_and_extra_flags() -> None:
    argv = engine_command(
        "py",
        "/m",
        port=1,
        served_model_name="x",
        max_num_seqs=4,
        max_num_batched_tokens=2048,
        extra_args=["--seed", "7"],
    )
    assert _flag(argv, "--max-num-seqs") == "4"
    assert _flag(argv, "--max-num-batched-tokens") == "2048"
    assert argv[-2:] == ["--seed", "7"]


def test_environment_is_lean_offline_and_isolated() -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/lab", "VLLM_CPU_KVCACHE_SPACE": "40", "HOME": "/h"}
    env = engine_environment(base)
    assert env["PYTHONPATH"].endswith("vllm_plugins")  # only the lab-headers middleware
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["PATH"] == "/bin"
    assert base["PYTHONPATH"] == "/lab"  # the caller's mapping is not modified


def test_environment_can_leave_threads_to_vllm() -> None:
    env = engine_environment({}, cpu_threads=None)
    assert "OMP_NUM_THREADS" not in env
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env


def test_zone_and_group_reach_the_engine_for_its_headers_middleware() -> None:
    argv = engine_command("py", "/m", port=1, served_model_name="x")
    assert _flag(argv, "--middleware") == "lab_headers.add_lab_headers"
    env = engine_environment({"LAB_ZONE": "stale"}, zone="us-west-2a", group="vllm-us-west-2a-0")
    assert (env["LAB_ZONE"], env["LAB_GROUP"]) == ("us-west-2a", "vllm-us-west-2a-0")
    assert "LAB_ZONE" not in engine_environment({"LAB_ZONE": "stale"})
    plugin = Path(env["PYTHONPATH"]) / "lab_headers.py"
    assert plugin.is_file()
    # The middleware runs inside the vLLM venv: it must not import the lab's packages.
    assert "labutils" not in plugin.read_text().split('"""', 2)[2]
