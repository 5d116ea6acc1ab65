"""Simulator vs published vLLM measurements: prints each reference value beside the simulator's.

Runs the simulated engine in real (asyncio) time with each reference's workload, measures it the
way the reference did, and prints value, reference and error. Usage:

    python benchmarks/sim_fidelity.py

References (public; see labutils/sim/perf.py for every model constant):
  [M] J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100" (johnmusgrave.com/p/
      vllm-throughput-latency-sweep-on): Llama-3.1-8B-Instruct BF16, 1 x A100-40GB, vLLM 0.23,
      `vllm bench serve` random 1024 in / 128 out, --ignore-eos. C=1: ~75 output tok/s
      (~77 % of the bandwidth roofline); C=8: 6.6x the C=1 throughput. [M] is the calibration
      point of ETA_BANDWIDTH, so row 1 checks the calibration; row 2 is an independent check.
  [Y] InferenceBench "Recipe: concurrency sweep" (yobitelcomm.github.io/bench/recipes/
      concurrency-sweep/): Llama-3.1-8B-Instruct fp16, 1 x H100-80GB, vLLM 0.21, workload
      "chatbot-short" (lengths not published; the simulator assumes 256 in / 128 out, which
      matters little for TPOT at low concurrency). TPOT p50: C=1 6.48 ms, C=4 6.59 ms,
      C=16 10.94 ms (the last depends on prefill interference, so on the unknown lengths).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Use this checkout's labutils even when another copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labutils.sim.engine import FINISHED, SimEngine, SimRequest
from labutils.sim.server import build_engine


@dataclass
class _Run:
    output_tok_s: float
    tpot_s: float
    ttft_s: float


async def _client(engine: SimEngine, n_requests: int, prompt: int, out: int, stats: list) -> None:
    for _ in range(n_requests):
        req = SimRequest(prompt_tokens=prompt, max_tokens=out, stop_after_tokens=out)
        start = time.monotonic()
        engine.submit(req)
        first = None
        while await req.tokens_out.get() != FINISHED:
            if first is None:
                first = time.monotonic()
        end = time.monotonic()
        assert first is not None
        stats.append((first - start, (end - first) / (out - 1), out))


async def _bench(
    engine: SimEngine, concurrency: int, per_client: int, prompt: int, out: int
) -> _Run:
    """Closed loop like `vllm bench serve --max-concurrency C`."""
    engine.start()
    stats: list[tuple[float, float, int]] = []
    start = time.monotonic()
    try:
        await asyncio.gather(
            *(_client(engine, per_client, prompt, out, stats) for _ in range(concurrency))
        )
    finally:
        await engine.stop()
    duration = time.monotonic() - start
    n = len(stats)
    return _Run(
        output_tok_s=sum(s[2] for s in stats) / duration,
        tpot_s=sum(s[1] for s in stats) / n,
        ttft_s=sum(s[0] for s in stats) / n,
    )


def _row(label: str, sim: float, ref: float, unit: str) -> str:
    err = (sim - ref) / ref * 100
    return f"{label:<58} {sim:>10.1f} {ref:>10.1f} {unit:<8} {err:>+7.1f} %"


def main() -> None:
    a100 = dict(model="llama-3.1-8b", gpu="a100-40gb", max_model_len=4096, with_metrics=False)
    c1 = asyncio.run(_bench(build_engine(**a100), 1, 3, 1024, 128))  # type: ignore[arg-type]
    c8 = asyncio.run(_bench(build_engine(**a100), 8, 2, 1024, 128))  # type: ignore[arg-type]
    h100 = dict(model="llama-3.1-8b", gpu="h100", max_model_len=4096, with_metrics=False)
    y = {
        c: asyncio.run(_bench(build_engine(**h100), c, n, 256, 128))  # type: ignore[arg-type]
        for c, n in ((1, 3), (4, 2), (16, 2))
    }
    print(f"{'measurement':<58} {'simulator':>10} {'published':>10} {'unit':<8} {'error':>9}")
    print(_row("[M] A100-40GB 8B, C=1: decode rate 1/TPOT", 1 / c1.tpot_s, 75.0, "tok/s"))
    print(
        _row(
            "[M] A100-40GB 8B, C=8 / C=1 output throughput",
            c8.output_tok_s / c1.output_tok_s,
            6.6,
            "x",
        )
    )
    for c, ref_ms in ((1, 6.48), (4, 6.59), (16, 10.94)):
        print(
            _row(f"[Y] H100 8B, C={c}: TPOT p50 vs simulator mean", y[c].tpot_s * 1e3, ref_ms, "ms")
        )
    print()
    print(f"simulator detail: C=1 TTFT {c1.ttft_s * 1e3:.0f} ms, TPOT {c1.tpot_s * 1e3:.1f} ms, "
          f"{c1.output_tok_s:.0f} tok/s; C=8 TTFT {c8.ttft_s * 1e3:.0f} ms, "
          f"TPOT {c8.tpot_s * 1e3:.1f} ms, {c8.output_tok_s:.0f} tok/s; "
          f"H100 C=16 {y[16].output_tok_s:.0f} tok/s (published 1384)")  # fmt: skip


if __name__ == "__main__":
    main()
