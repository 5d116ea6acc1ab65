"""Run ``vllm bench serve`` (shipped with the CPU build) as a peer of ``labctl loadtest``.

vLLM's own benchmark client is the reference load tester the lab's sender is cross-checked
against: same server, same rate, same prompt and output lengths. It runs from the vLLM venv
(its console script needs the ``vllm`` metadata alias the installer adds) and writes a JSON
result that is read back into :class:`VllmBenchResult`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labutils.errors import ConfigError, LoadTestError
from labutils.realengine.env import INSTALL_HINT, RealEngineEnv, check_environment

__all__ = ["VllmBenchResult", "run_vllm_bench", "vllm_bench_command"]

_MAX_PROMPTS = 5000  # every load loop in the lab is bounded


@dataclass(frozen=True)
class VllmBenchResult:
    """Summary of one ``vllm bench serve`` run (times in seconds).

    Attributes:
        completed: successful requests.
        failed: failed requests.
        duration_s: benchmark wall time.
        request_rate: the configured rate (requests/s).
        request_throughput: completed requests per second.
        output_throughput: generated tokens per second.
        median_ttft_s, p99_ttft_s: time to first token.
        median_tpot_s, p99_tpot_s: time per output token after the first.
        median_itl_s: inter-token latency.
        median_e2el_s: end-to-end latency.
        raw: the tool's whole JSON result (per-request lists included).
    """

    completed: int
    failed: int
    duration_s: float
    request_rate: float
    request_throughput: float
    output_throughput: float
    median_ttft_s: float
    p99_ttft_s: float
    median_tpot_s: float
    p99_tpot_s: float
    median_itl_s: float
    median_e2el_s: float
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VllmBenchResult:
        """Read the JSON that ``vllm bench serve --save-result`` writes (ms → s)."""

        def ms(key: str) -> float:
            value = data.get(key)
            return float(value) / 1000.0 if value is not None else float("nan")

        return cls(
            completed=int(data["completed"]),
            failed=int(data.get("failed", 0)),
            duration_s=float(data["duration"]),
            request_rate=float(data.get("request_rate", float("nan"))),
            request_throughput=float(data["request_throughput"]),
            output_throughput=float(data["output_throughput"]),
            median_ttft_s=ms("median_ttft_ms"),
            p99_ttft_s=ms("p99_ttft_ms"),
            median_tpot_s=ms("median_tpot_ms"),
            p99_tpot_s=ms("p99_tpot_ms"),
            median_itl_s=ms("median_itl_ms"),
            median_e2el_s=ms("median_e2el_ms"),
            raw=data,
        )

    def to_frame(self) -> pd.DataFrame:
        """One row with the summary (the per-request lists stay in ``raw``)."""
        row = {k: v for k, v in asdict(self).items() if k != "raw"}
        return pd.DataFrame([{"tool": "vllm bench serve", **row}])

    def requests_frame(self) -> pd.DataFrame:
        """One row per request: ``ttft_s``, ``e2e_s``, ``input_tokens``, ``output_tokens``."""
        data = self.raw
        if "ttfts" not in data:
            raise LoadTestError("vllm bench result has no per-request data; run with detail")
        return pd.DataFrame(
            {
                "ttft_s": data["ttfts"],
                "e2e_s": data["latencies"],
                "input_tokens": data["input_lens"],
                "output_tokens": data["output_lens"],
            }
        )


def vllm_bench_command(
    python: str | Path,
    url: str,
    model: str,
    tokenizer: str | Path,
    *,
    request_rate: float,
    num_prompts: int,
    input_tokens: int,
    output_tokens: int,
    result_dir: str | Path,
    result_filename: str,
    seed: int = 0,
) -> list[str]:
    """The argv of a streaming ``vllm bench serve`` run with fixed prompt/output lengths."""
    # `vllm` console script next to the interpreter; its CLI equals `python -m vllm...main`.
    vllm = Path(python).parent / "vllm"
    return [
        str(vllm),
        "bench",
        "serve",
        "--backend",
        "vllm",  # streaming /v1/completions
        "--base-url",
        url.rstrip("/"),
        "--model",
        model,
        "--tokenizer",
        str(tokenizer),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_tokens),
        "--random-output-len",
        str(output_tokens),
        "--random-range-ratio",
        "0",
        "--ignore-eos",  # every request generates exactly output_tokens
        "--num-prompts",
        str(num_prompts),
        "--request-rate",
        str(request_rate),
        "--seed",
        str(seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        result_filename,
        "--disable-tqdm",
    ]


def run_vllm_bench(
    url: str,
    model: str,
    tokenizer: str | Path,
    *,
    request_rate: float,
    num_prompts: int,
    input_tokens: int = 32,
    output_tokens: int = 16,
    seed: int = 0,
    env: RealEngineEnv | None = None,
    timeout_s: float = 600.0,
) -> VllmBenchResult:
    """Run ``vllm bench serve`` against ``url`` (127.0.0.1 only) and return its summary.

    Args:
        url: the server (a real engine or the gateway in front of it).
        model: served model name.
        tokenizer: the model folder (its tokenizer sizes the random prompts).
        request_rate: Poisson arrival rate, requests/s.
        num_prompts: total requests (bounded: at most 5000).
        input_tokens, output_tokens: exact prompt and output lengths.
        seed: prompt sampling seed.
        env: a checked vLLM venv (default: :func:`check_environment`).
        timeout_s: limit for the whole run.

    Raises:
        LoadTestError: unbounded or non-local parameters, or the tool failed.
        ConfigError: no usable vLLM venv, or it lacks the ``vllm`` metadata alias.
    """
    if not 0 < num_prompts <= _MAX_PROMPTS:
        raise LoadTestError(f"num_prompts={num_prompts}: choose 1..{_MAX_PROMPTS}")
    if not request_rate > 0:
        raise LoadTestError(f"request_rate={request_rate}: must be > 0 requests/s")
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise LoadTestError(f"{url}: the lab sends load only to 127.0.0.1")
    env = env or check_environment()
    if not env.has_vllm_metadata:
        raise ConfigError(
            f"{env.venv}: 'vllm bench' needs the 'vllm' metadata alias; {INSTALL_HINT}"
        )
    run_env = {**os.environ, "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1"}
    run_env.update({"TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    run_env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="lab-vllm-bench-") as tmp:
        argv = vllm_bench_command(
            env.python,
            url,
            model,
            tokenizer,
            request_rate=request_rate,
            num_prompts=num_prompts,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            result_dir=tmp,
            result_filename="result.json",
            seed=seed,
        )
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, env=run_env, check=False
            )
        except subprocess.TimeoutExpired:
            raise LoadTestError(
                f"vllm bench serve against {url} ran over {timeout_s:.0f} s; "
                "lower num_prompts or raise the rate"
            ) from None
        result_path = Path(tmp) / "result.json"
        if done.returncode != 0 or not result_path.exists():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise LoadTestError(
                f"vllm bench serve against {url} failed (exit {done.returncode}): "
                f"{lines[-1] if lines else 'no output'}"
            )
        return VllmBenchResult.from_json(json.loads(result_path.read_text()))
