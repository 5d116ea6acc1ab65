"""The simulated engine: vLLM V1-style continuous batching driven by real wall-clock time.

One asyncio task per engine runs steps: schedule (running requests first, then waiting ones,
within ``max_num_seqs``, the ``max_num_batched_tokens`` budget with chunked prefill, and free
16-token KV blocks, preempting the newest running request when blocks run out, as vLLM's
recompute preemption does), sleep for the step time the performance model gives, then emit one
token per sequence that finished its computation.

Like vLLM V1 with async scheduling (on by default: ``vllm/config/vllm.py`` resolves
``async_scheduling`` to True; ``vllm/v1/core/sched/async_scheduler.py``), step N+1 is scheduled
while step N runs, so a request that arrives during step N is first scheduled into step N+2:
under load its TTFT includes about one more step than a synchronous scheduler's would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from dataclasses import dataclass, field

from labutils.sim.metrics import EngineMetrics
from labutils.sim.perf import BLOCK_SIZE_TOKENS, EngineConfig, MemoryPlan, StepShape, step_time_s

__all__ = ["FINISHED", "SimEngine", "SimRequest"]

# Sentinel queued after a request's last token.
FINISHED = -1

# A step that starts this late after the previous deadline starts "now" instead of catching up,
# so a stalled event loop does not compress the following steps.
_CATCH_UP_LIMIT_S = 0.005

# asyncio's epoll wait rounds timeouts up to whole milliseconds (selectors.EpollSelector), so
# timers fire 0-1 ms late; waking half a millisecond early centres the error on the deadline.
_TIMER_EARLY_S = 0.0005


@dataclass(eq=False)
class SimRequest:
    """One generation request as the scheduler tracks it.

    ``tokens_out`` receives the index of each generated token, then ``FINISHED``.
    """

    prompt_tokens: int
    max_tokens: int
    stop_after_tokens: int
    arrival_s: float = field(default_factory=time.monotonic)
    num_computed_tokens: int = 0
    output_tokens: int = 0
    num_blocks: int = 0
    num_preemptions: int = 0
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    finished_reason: str | None = None
    tokens_out: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    @property
    def total_tokens(self) -> int:
        """Prompt plus generated tokens (what must be in the KV cache to sample the next)."""
        return self.prompt_tokens + self.output_tokens

    @property
    def target_output_tokens(self) -> int:
        """Where generation ends: ``max_tokens`` or the sampled end-of-sequence."""
        return min(self.max_tokens, self.stop_after_tokens)


class SimEngine:
    """A simulated vLLM engine; call :meth:`start` inside a running event loop."""

    def __init__(self, cfg: EngineConfig, plan: MemoryPlan, metrics: EngineMetrics | None) -> None:
        self.cfg = cfg
        self.plan = plan
        self.metrics = metrics
        self.waiting: collections.deque[SimRequest] = collections.deque()
        self.running: list[SimRequest] = []
        self.free_blocks = plan.num_gpu_blocks
        self.slow_factor = 1.0
        self.steps = 0
        self.busy_s = 0.0
        self.wall_s = 0.0
        self.lag_s_total = 0.0
        self.lag_s_max = 0.0
        self.preemptions = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- public surface -------------------------------------------------------------------
    def start(self) -> None:
        """Start the step loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        """Stop the step loop; unfinished requests end with reason ``abort``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for req in [*self.running, *self.waiting]:
            self._finish(req, "abort", time.monotonic())

    def submit(self, req: SimRequest) -> None:
        """Queue ``req``; its tokens arrive on ``req.tokens_out``."""
        self.waiting.append(req)
        if self.metrics is not None:
            self.metrics.params_max_tokens.observe(req.max_tokens)
        self._update_gauges()
        self._wake.set()

    def abort(self, req: SimRequest) -> None:
        """Drop a request the client gave up on (frees its KV blocks)."""
        if req.finished_reason is None:
            self._finish(req, "abort", time.monotonic())

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of KV blocks in use."""
        return 1.0 - self.free_blocks / self.plan.num_gpu_blocks

    @property
    def step_lag_s_mean(self) -> float:
        """Mean signed delay of step ends past their model deadline (event-loop jitter)."""
        return self.lag_s_total / self.steps if self.steps else 0.0

    @property
    def timing_error(self) -> float:
        """Relative error of the wall time the steps took versus the model (0.05 = 5 % slow)."""
        return self.wall_s / self.busy_s - 1.0 if self.busy_s else 0.0

    # --- step loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = last_end = loop.time()
        # When the step now ending was started: async scheduling decided the next step then.
        prev_start: float | None = None
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                prev_start = None
            now = loop.time()
            catch_up = now - deadline < _CATCH_UP_LIMIT_S
            # Back-to-back: this step was scheduled when the previous one started, so requests
            # that arrived since wait one step more (vLLM's AsyncScheduler). After idling there
            # was no step in flight and the scheduler sees everything that has arrived.
            cutoff = prev_start if catch_up and prev_start is not None else None
            shape, scheduled = self._schedule(admit_arrived_by=cutoff)
            if not scheduled:
                self._wake.clear()
                if cutoff is not None and self.waiting:
                    # Only requests that arrived too late wait: schedule them next turn.
                    prev_start = None
                    continue
                await self._wake.wait()
                prev_start = None
                continue
            step_s = step_time_s(self.cfg, shape) * self.slow_factor
            now = loop.time()
            # Back-to-back steps are timed from the previous deadline, so timer jitter does not
            # accumulate; after idling (or a stall) the step starts now.
            catch_up = now - deadline < _CATCH_UP_LIMIT_S
            start = deadline if catch_up else now
            prev_start = start
            deadline = start + step_s
            await asyncio.sleep(max(0.0, deadline - loop.time() - _TIMER_EARLY_S))
            end = loop.time()
            lag_s = end - deadline
            self.wall_s += end - (last_end if catch_up else now)
            last_end = end
            self.steps += 1
            self.busy_s += step_s
            self.lag_s_total += lag_s
            self.lag_s_max = max(self.lag_s_max, lag_s)
            if self.metrics is not None:
                self.metrics.iteration_tokens.observe(shape.tokens)
            self._commit(scheduled, time.monotonic())

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / BLOCK_SIZE_TOKENS)

    def _schedule(
        self, admit_arrived_by: float | None = None
    ) -> tuple[StepShape, list[tuple[SimRequest, int]]]:
        budget = self.plan.max_num_batched_tokens
        scheduled: list[tuple[SimRequest, int]] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.total_tokens - req.num_computed_tokens, budget)
            need = self._blocks_for(req.num_computed_tokens + n) - req.num_blocks
            while need > self.free_blocks and self.running[-1] is not req:
                self._preempt(self.running[-1])
                preempted = True
            if need > self.free_blocks:
                self._preempt(req)  # nothing left to take blocks from
                preempted = True
                break
            self._allocate(req, need)
            scheduled.append((req, n))
            budget -= n
            i += 1
        now = time.monotonic()
        while (
            self.waiting
            and not preempted
            and budget > 0
            and len(self.running) < self.cfg.max_num_seqs
        ):
            req = self.waiting[0]
            if admit_arrived_by is not None and req.arrival_s > admit_arrived_by:
                break  # arrived after this step was scheduled (FIFO: the rest did too)
            n = min(req.total_tokens - req.num_computed_tokens, budget)
            need = self._blocks_for(req.num_computed_tokens + n) - req.num_blocks
            if need > self.free_blocks:
                break
            self.waiting.popleft()
            self._allocate(req, need)
            self.running.append(req)
            if req.first_scheduled_s is None:
                req.first_scheduled_s = now
            scheduled.append((req, n))
            budget -= n
        self._update_gauges()
        return self._shape(scheduled), scheduled

    @staticmethod
    def _shape(scheduled: list[tuple[SimRequest, int]]) -> StepShape:
        decode_seqs = decode_ctx = prefill = pairs = prefill_seqs = 0
        for req, n in scheduled:
            if n == 1 and req.output_tokens > 0 and req.num_computed_tokens == req.total_tokens - 1:
                decode_seqs += 1
                decode_ctx += req.total_tokens
            else:
                prefill += n
                prefill_seqs += 1
                pairs += n * (req.num_computed_tokens + (n + 1) // 2)
        return StepShape(decode_seqs, decode_ctx, prefill, pairs, prefill_seqs)

    def _allocate(self, req: SimRequest, blocks: int) -> None:
        if blocks > 0:
            self.free_blocks -= blocks
            req.num_blocks += blocks

    def _release(self, req: SimRequest) -> None:
        self.free_blocks += req.num_blocks
        req.num_blocks = 0

    def _preempt(self, req: SimRequest) -> None:
        # Recompute preemption (vLLM V1): drop the KV cache, requeue at the front.
        self.running.remove(req)
        self._release(req)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)
        if self.metrics is not None:
            self.metrics.preemptions.inc()

    def _commit(self, scheduled: list[tuple[SimRequest, int]], now: float) -> None:
        m = self.metrics
        new_tokens = 0
        for req, n in scheduled:
            if req.finished_reason is not None:
                continue  # aborted during the step
            req.num_computed_tokens += n
            if req.num_computed_tokens < req.total_tokens:
                continue  # a prefill chunk, no token sampled yet
            req.output_tokens += 1
            new_tokens += 1
            if req.first_token_s is None:
                req.first_token_s = now
                if m is not None:
                    m.ttft.observe(now - req.arrival_s)
                    m.prompt_tokens.inc(req.prompt_tokens)
            elif m is not None and req.last_token_s is not None:
                m.itl.observe(now - req.last_token_s)
            req.last_token_s = now
            req.tokens_out.put_nowait(req.output_tokens - 1)
            if req.output_tokens >= req.target_output_tokens:
                reason = "length" if req.output_tokens >= req.max_tokens else "stop"
                self._finish(req, reason, now)
        if m is not None and new_tokens:
            m.generation_tokens.inc(new_tokens)
        self._update_gauges()

    def _finish(self, req: SimRequest, reason: str, now: float) -> None:
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self._release(req)
        req.finished_reason = reason
        req.tokens_out.put_nowait(FINISHED)
        m = self.metrics
        if m is None:
            return
        m.success[reason].inc()
        if reason == "abort":
            return
        m.e2e.observe(now - req.arrival_s)
        m.request_prompt_tokens.observe(req.prompt_tokens)
        m.request_generation_tokens.observe(req.output_tokens)
        m.request_preemptions.observe(req.num_preemptions)
        if req.first_scheduled_s is not None and req.first_token_s is not None:
            m.queue_time.observe(req.first_scheduled_s - req.arrival_s)
            m.inference_time.observe(now - req.first_scheduled_s)
            m.prefill_time.observe(req.first_token_s - req.first_scheduled_s)
            m.decode_time.observe(now - req.first_token_s)
            if req.output_tokens > 1:
                m.tpot.observe((now - req.first_token_s) / (req.output_tokens - 1))

    def _update_gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.running.set(len(self.running))
        m.waiting.set(len(self.waiting))
        m.waiting_capacity.set(len(self.waiting))
        m.kv_usage.set(self.kv_cache_usage)
