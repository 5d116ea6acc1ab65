"""The scheduler's behaviour under load, in real (asyncio) time; relative assertions only."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from labutils.sim.engine import FINISHED, SimEngine, SimRequest
from labutils.sim.server import build_engine


@dataclasses.dataclass
class _Trace:
    ttft_s: float
    e2e_s: float
    tokens: int


async def _consume(req: SimRequest) -> _Trace:
    start = time.monotonic()
    first = None
    tokens = 0
    while await asyncio.wait_for(req.tokens_out.get(), 30) != FINISHED:
        tokens += 1
        if first is None:
            first = time.monotonic() - start
    return _Trace(first if first is not None else float("nan"), time.monotonic() - start, tokens)


def _req(prompt: int = 64, out: int = 8) -> SimRequest:
    return SimRequest(prompt_tokens=prompt, max_tokens=out, stop_after_tokens=out)


async def _burst(engine: SimEngine, n: int, prompt: int = 64, out: int = 8) -> list[_Trace]:
    engine.start()
    try:
        reqs = [_req(prompt, out) for _ in range(n)]
        for r in reqs:
            engine.submit(r)
        return list(await asyncio.gather(*(_consume(r) for r in reqs)))
    finally:
        await engine.stop()


def test_ttft_rises_with_queueing_beyond_capacity() -> None:
    engine = build_engine("llama-3.1-8b", "h100", max_model_len=4096, max_num_seqs=2)
    traces = asyncio.run(_burst(engine, 12, out=6))
    assert all(t.tokens == 6 for t in traces)
    first_two = max(t.ttft_s for t in traces[:2])
    last_two = min(t.ttft_s for t in traces[-2:])
    # 12 requests, 2 at a time: the last pair waits ~5 rounds of 6 steps.
    assert last_two > 4 * first_two


def test_max_num_seqs_caps_running_and_the_rest_waits() -> None:
    engine = build_engine("llama-3.1-8b", "h100", max_model_len=4096, max_num_seqs=3)
    engine.slow_factor = 0.5
    seen_running: list[int] = []
    seen_waiting: list[int] = []
    original = engine._schedule

    def spy(**kwargs: object) -> object:
        result = original(**kwargs)  # type: ignore[arg-type]
        seen_running.append(len(engine.running))
        seen_waiting.append(len(engine.waiting))
        return result

    engine._schedule = spy  # type: ignore[method-assign]
    traces = asyncio.run(_burst(engine, 9, out=4))
    assert all(t.tokens == 4 for t in traces)
    assert max(seen_running) == 3
    assert max(seen_waiting) >= 5
    assert engine.metrics is not None
    assert engine.metrics.running._value.get() == 0  # gauge back to idle


def test_preemption_when_kv_cache_is_too_small() -> None:
    engine = build_engine("llama-3.1-8b", "h100", max_model_len=1024)
    # Shrink the KV cache to 40 blocks (640 tokens): 6 requests of 200 + 40 tokens need 90.
    engine.plan = dataclasses.replace(engine.plan, num_gpu_blocks=40)
    engine.free_blocks = 40
    engine.slow_factor = 0.3
    traces = asyncio.run(_burst(engine, 6, prompt=200, out=40))
    assert all(t.tokens == 40 for t in traces)  # recomputed, not lost
    assert engine.preemptions > 0
    assert engine.free_blocks == 40  # every block returned
    assert engine.metrics is not None
    assert engine.metrics.preemptions._value.get() == engine.preemptions


def test_no_preemption_with_a_large_kv_cache() -> None:
    engine = build_engine("llama-3.1-8b", "h100", max_model_len=1024)
    engine.slow_factor = 0.3
    asyncio.run(_burst(engine, 6, prompt=200, out=40))
    assert engine.preemptions == 0


def test_tensor_parallel_4_decodes_faster_than_tp1() -> None:
    def e2e(tp: int) -> float:
        engine = build_engine(
            "llama-2-13b", "a100-80gb", tensor_parallel_size=tp, max_model_len=4096
        )
        (trace,) = asyncio.run(_burst(engine, 1, prompt=32, out=25))
        return trace.e2e_s

    # Roofline: ~16 ms/token at TP=1, ~6 ms at TP=4.
    assert e2e(1) > 1.8 * e2e(4)


def test_throughput_saturates_beyond_max_num_seqs() -> None:
    def tokens_per_s(concurrency: int) -> float:
        engine = build_engine("llama-3.1-8b", "h100", max_model_len=4096, max_num_seqs=8)
        start = time.monotonic()
        traces = asyncio.run(_burst(engine, concurrency, prompt=32, out=20))
        return sum(t.tokens for t in traces) / (time.monotonic() - start)

    one, eight, thirty_two = tokens_per_s(1), tokens_per_s(8), tokens_per_s(32)
    assert eight > 3 * one  # batching is nearly free while memory bound
    assert thirty_two < 1.5 * eight  # the batch is capped: more offered load queues instead


def test_slow_fault_stretches_steps() -> None:
    def e2e(factor: float) -> float:
        engine = build_engine("llama-3.1-8b", "h100", max_model_len=4096)
        engine.slow_factor = factor
        (trace,) = asyncio.run(_burst(engine, 1, out=15))
        return trace.e2e_s

    assert e2e(4.0) > 2.5 * e2e(1.0)


def test_abort_frees_blocks() -> None:
    async def run() -> SimEngine:
        engine = build_engine("llama-3.1-8b", "h100", max_model_len=4096)
        engine.start()
        req = _req(500, 1000)
        engine.submit(req)
        await asyncio.wait_for(req.tokens_out.get(), 10)
        assert engine.free_blocks < engine.plan.num_gpu_blocks
        engine.abort(req)
        await engine.stop()
        assert req.finished_reason == "abort"
        return engine

    engine = asyncio.run(run())
    assert engine.free_blocks == engine.plan.num_gpu_blocks
