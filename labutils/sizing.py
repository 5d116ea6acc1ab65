"""Right-sizing: which (instance type, TP, PP) layout serves a model cheapest within its SLOs.

Four steps, each a small public function:

1. :func:`candidates` lists every (instance type, TP, PP) layout of
   :data:`labutils.catalog.INSTANCE_TYPES` for a model (TP a divisor of the GPUs per node, PP the
   nodes), asks the simulator's memory plan (:func:`labutils.sim.perf.plan_memory`) whether vLLM
   would load it, says why each rejected one was refused, and puts the price from
   ``labutils/data/prices.yaml`` and two roofline predictions beside the accepted ones: one
   engine at a given concurrency (:func:`roofline`), and its *knee* (:func:`roofline_knee`): the
   largest batch whose predicted TPOT still meets the SLO, the request rate that keeps it
   there and what a million output tokens cost at that rate.
2. :func:`shortlist` keeps the cheapest layouts at their roofline knee, one per GPU type.
3. :func:`sweep` starts one simulated engine per shortlisted layout on 127.0.0.1 and sweeps it to
   its knee: open-loop Poisson load steps at rising fractions of the roofline knee rate
   (``labutils.loadtest``), stopping after the first step that misses the SLO. Each step reports
   the engine's own output tokens/s over the step's steady window (``vllm:generation_tokens``,
   as ``rate()`` would in Prometheus), TTFT/TPOT percentiles with the number of requests they
   come from, and the USD per million output tokens at that throughput.
4. :func:`knee_points` takes each layout's highest load that met the SLO; :func:`recommend`
   ranks them by USD per million output tokens (the figure an operator buys on) and explains
   the pick in sentences built from the measured numbers.

A node whose GPUs are not all used by one engine (TP smaller than the GPUs per node) runs
``GPUs per node / TP`` independent engines; they do not share anything in vLLM, so one engine is
measured and the node's throughput is that times the engine count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labutils._aio import run_sync
from labutils._progress import progress_bar
from labutils.catalog import INSTANCE_TYPES, load_prices
from labutils.catalog import gpu as lookup_gpu
from labutils.catalog import model as lookup_model
from labutils.errors import (
    ConfigError,
    LoadTestError,
    SimulatorError,
    ValidationError,
    WaitTimeout,
)
from labutils.sim.perf import EngineConfig, StepShape, plan_memory, step_time_s

__all__ = [
    "SIM_LATE_SHARE",
    "LatencySlo",
    "Measurement",
    "Recommendation",
    "SweepSettings",
    "candidates",
    "check_recommendation",
    "knee_points",
    "layout_label",
    "recommend",
    "roofline",
    "roofline_knee",
    "shortlist",
    "sweep",
    "sweep_async",
    "usd_per_mtok",
]

_SECONDS_PER_HOUR = 3600.0
_TOKENS_PER_MTOK = 1e6
# A step whose simulated steps ran this much slower than the model was limited by this
# machine's CPU, not by the simulated GPU: its latencies overstate the GPU's.
SIM_LATE_SHARE = 0.05


def usd_per_mtok(usd_per_hour: Any, output_tokens_per_s: Any) -> Any:
    """USD per million output tokens: the hourly price over the tokens an hour produces.

    Works on numbers and on pandas Series alike; a throughput of 0 gives NaN (no tokens, no
    price per token), never 0 or inf.
    """
    tokens_per_hour = output_tokens_per_s * _SECONDS_PER_HOUR
    if isinstance(tokens_per_hour, pd.Series):
        return (usd_per_hour / tokens_per_hour * _TOKENS_PER_MTOK).where(tokens_per_hour > 0)
    return usd_per_hour / tokens_per_hour * _TOKENS_PER_MTOK if tokens_per_hour > 0 else math.nan


def layout_label(instance_type: str, tensor_parallel_size: int, pipeline_parallel_size: int) -> str:
    """Short name of a layout, e.g. ``g5.12xlarge TP4 PP1``."""
    return f"{instance_type} TP{tensor_parallel_size} PP{pipeline_parallel_size}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _engine_config(
    model: str, gpu: str, tp: int, pp: int, max_model_len: int | None, max_num_seqs: int
) -> EngineConfig:
    return EngineConfig(
        lookup_model(model),
        lookup_gpu(gpu),
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
    )


@dataclass(frozen=True)
class LatencySlo:
    """Latency targets on percentiles of a load step (ms)."""

    tpot_p50_ms: float = 50.0
    ttft_p95_ms: float = 2000.0

    def misses(self, row: pd.Series | dict[str, Any]) -> list[str]:
        """The targets ``row`` misses, as short phrases (empty when it meets them all)."""
        out = []
        if not row["tpot_p50_ms"] <= self.tpot_p50_ms:
            out.append(f"TPOT p50 {row['tpot_p50_ms']:.1f} ms > {self.tpot_p50_ms:g} ms")
        if not row["ttft_p95_ms"] <= self.ttft_p95_ms:
            out.append(f"TTFT p95 {row['ttft_p95_ms']:.0f} ms > {self.ttft_p95_ms:g} ms")
        if row["failed"] > 0:
            out.append(f"{int(row['failed'])} of {int(row['requests'])} requests failed")
        if not row["completed"] > 0:
            out.append("no request completed")
        return out


def roofline(
    cfg: EngineConfig, concurrency: int, input_tokens: int, output_tokens: int
) -> dict[str, float]:
    """Roofline prediction of one engine under ``concurrency`` steady closed-loop users.

    In steady state each step decodes ``min(concurrency, max_num_seqs)`` sequences whose
    context averages ``input_tokens + output_tokens / 2`` and, since one of them finishes every
    ``output_tokens / batch`` steps and its user sends the next prompt at once, also prefills
    ``batch x input_tokens / output_tokens`` prompt tokens in the same (chunked-prefill) step.
    No queueing beyond ``max_num_seqs`` or KV preemption is modelled, and prefills are spread
    out so they hide under memory-bound decode steps: it is the best case a measurement can
    approach. Random (Poisson) arrivals make batches and prefills bunch up, so a measurement
    reaches the same TPOT at a lower rate. TTFT is the prefill of one prompt on an idle engine.

    Returns:
        ``roofline_output_tokens_per_s``, ``roofline_tpot_ms``, ``roofline_ttft_ms``.
    """
    batch = max(1, min(concurrency, cfg.max_num_seqs))
    context = input_tokens + output_tokens / 2
    new_prompts_per_step = batch / output_tokens
    steady = StepShape(
        decode_seqs=batch,
        decode_context_tokens=round(batch * context),
        prefill_tokens=round(new_prompts_per_step * input_tokens),
        prefill_attention_pairs=round(new_prompts_per_step * input_tokens * (input_tokens + 1) / 2),
        prefill_seqs=math.ceil(new_prompts_per_step),
    )
    step_s = step_time_s(cfg, steady)
    pairs = input_tokens * (input_tokens + 1) // 2
    prefill_s = step_time_s(
        cfg, StepShape(prefill_tokens=input_tokens, prefill_attention_pairs=pairs, prefill_seqs=1)
    )
    return {
        "roofline_output_tokens_per_s": batch / step_s,
        "roofline_tpot_ms": step_s * 1e3,
        "roofline_ttft_ms": prefill_s * 1e3,
    }


def roofline_knee(
    cfg: EngineConfig,
    tpot_ms: float,
    input_tokens: int,
    output_tokens: int,
    kv_cache_tokens: int,
) -> dict[str, Any]:
    """The largest steady batch whose roofline TPOT meets ``tpot_ms``, and the load it takes.

    The batch is bounded by ``max_num_seqs`` and by the KV cache: every running sequence keeps
    up to ``input_tokens + output_tokens`` tokens there (beyond that vLLM preempts). A batch of
    ``c`` steady users produces ``c`` tokens per step, so it is sustained by
    ``c / (output_tokens x step)`` requests per second.

    Returns:
        ``roofline_knee_concurrency``, ``roofline_knee_rps``, ``roofline_knee_tpot_ms``,
        ``roofline_knee_output_tokens_per_s``, ``roofline_meets_slo`` (False when even one
        sequence is slower than ``tpot_ms``; the columns then describe batch 1) and
        ``roofline_knee_limit`` (what stops the batch growing: the TPOT SLO, max_num_seqs or
        the KV cache).
    """
    by_kv = kv_cache_tokens // (input_tokens + output_tokens)
    cap = max(1, min(cfg.max_num_seqs, by_kv))

    def tpot(c: int) -> float:
        return roofline(cfg, c, input_tokens, output_tokens)["roofline_tpot_ms"]

    meets = tpot(1) <= tpot_ms
    lo, hi = 1, cap
    if meets and tpot(cap) <= tpot_ms:
        lo = cap
    elif meets:
        while hi - lo > 1:  # TPOT grows with the batch: bisect for the last c that meets
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if tpot(mid) <= tpot_ms else (lo, mid)
    pred = roofline(cfg, lo, input_tokens, output_tokens)
    if not meets:
        limit = "TPOT at batch 1"
    elif lo < cap:
        limit = "TPOT SLO"
    else:
        limit = "max_num_seqs" if cfg.max_num_seqs <= by_kv else "KV cache"
    return {
        "roofline_knee_concurrency": lo,
        "roofline_knee_rps": pred["roofline_output_tokens_per_s"] / output_tokens,
        "roofline_knee_tpot_ms": pred["roofline_tpot_ms"],
        "roofline_knee_output_tokens_per_s": pred["roofline_output_tokens_per_s"],
        "roofline_meets_slo": meets,
        "roofline_knee_limit": limit,
    }


def _no_price_reason(name: str, prices: dict[str, Any]) -> str:
    notes = prices.get("notes") or {}
    why = f": {notes[name]}" if isinstance(notes, dict) and name in notes else ""
    return (
        f"no on-demand price for {name} in labutils/data/prices.yaml "
        f"(as of {prices.get('as_of')}){why}"
    )


def candidates(
    model: str,
    *,
    max_model_len: int | None = 4096,
    max_nodes: int = 2,
    max_num_seqs: int = 256,
    concurrency: int = 16,
    input_tokens: int = 128,
    output_tokens: int = 16,
    slo: LatencySlo | None = None,
    instance_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every (instance type, TP, PP) layout for ``model``, accepted or with the reason it is not.

    Args:
        model: Hugging Face id or catalogue alias.
        max_model_len: the ``--max-model-len`` each engine is asked for (vLLM refuses a layout
            whose KV cache cannot hold one such sequence).
        max_nodes: largest PP (nodes per group) tried; TP > 1 across nodes is not tried.
        max_num_seqs: ``--max-num-seqs`` of each engine.
        concurrency: the load at which the ``roofline_*`` columns are predicted.
        input_tokens, output_tokens: the request shape of every prediction.
        slo: the TPOT target of the ``roofline_knee_*`` columns (default :class:`LatencySlo`).
        instance_types: restrict to these (default: the whole catalogue).

    Returns:
        One row per layout: ``layout, instance_type, gpu, gpus_per_node, tensor_parallel_size,
        pipeline_parallel_size, nodes, gpus, engines, accepted, reason, num_gpu_blocks,
        kv_cache_tokens, usd_per_hour``, the ``roofline_*`` columns at ``concurrency`` with
        ``roofline_usd_per_mtok``, and the knee columns of :func:`roofline_knee` with
        ``roofline_knee_tokens_per_s_per_gpu`` and ``roofline_knee_usd_per_mtok``.
    """
    spec = lookup_model(model)
    slo = slo or LatencySlo()
    prices = load_prices()
    usd_per_hour_table: dict[str, Any] = prices["usd_per_hour"]  # type: ignore[assignment]
    names = list(instance_types) if instance_types is not None else list(INSTANCE_TYPES)
    rows: list[dict[str, Any]] = []
    for name in names:
        if name not in INSTANCE_TYPES:
            raise ConfigError(
                f"unknown instance type {name!r}; choose from: {', '.join(INSTANCE_TYPES)}"
            )
        inst = INSTANCE_TYPES[name]
        for pp in range(1, max_nodes + 1):
            # Across nodes a group runs one engine over all GPUs of every node (LWS: one pod per
            # node), so smaller TP is only tried on a single node.
            for tp in _divisors(inst.gpus) if pp == 1 else [inst.gpus]:
                engines = inst.gpus // tp if pp == 1 else 1
                row: dict[str, Any] = {
                    "layout": layout_label(name, tp, pp),
                    "instance_type": name,
                    "gpu": inst.gpu,
                    "gpus_per_node": inst.gpus,
                    "tensor_parallel_size": tp,
                    "pipeline_parallel_size": pp,
                    "nodes": pp,
                    "gpus": inst.gpus * pp,
                    "engines": engines,
                    "accepted": False,
                    "reason": "",
                    "num_gpu_blocks": math.nan,
                    "kv_cache_tokens": math.nan,
                    "usd_per_hour": math.nan,
                }
                cfg = _engine_config(spec.alias, inst.gpu, tp, pp, max_model_len, max_num_seqs)
                try:
                    plan = plan_memory(cfg)
                except SimulatorError as exc:
                    row["reason"] = str(exc)
                    rows.append(row)
                    continue
                row["num_gpu_blocks"] = plan.num_gpu_blocks
                row["kv_cache_tokens"] = plan.kv_cache_tokens
                price = usd_per_hour_table.get(name)
                if price is None:
                    row["reason"] = _no_price_reason(name, prices)
                    rows.append(row)
                    continue
                row["accepted"] = True
                row["usd_per_hour"] = float(price) * pp
                pred = roofline(cfg, concurrency, input_tokens, output_tokens)
                row.update(pred)
                node_tokens_per_s = pred["roofline_output_tokens_per_s"] * engines
                row["roofline_tokens_per_s_per_gpu"] = node_tokens_per_s / row["gpus"]
                row["roofline_usd_per_mtok"] = usd_per_mtok(row["usd_per_hour"], node_tokens_per_s)
                knee = roofline_knee(
                    cfg, slo.tpot_p50_ms, input_tokens, output_tokens, plan.kv_cache_tokens
                )
                row.update(knee)
                knee_node_tokens_per_s = knee["roofline_knee_output_tokens_per_s"] * engines
                row["roofline_knee_tokens_per_s_per_gpu"] = knee_node_tokens_per_s / row["gpus"]
                row["roofline_knee_usd_per_mtok"] = usd_per_mtok(
                    row["usd_per_hour"], knee_node_tokens_per_s
                )
                rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update(
        model=spec.hf_id,
        max_model_len=max_model_len,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        slo_tpot_p50_ms=slo.tpot_p50_ms,
        prices_as_of=prices.get("as_of"),
        prices_region=prices.get("region"),
    )
    return frame


def shortlist(
    frame: pd.DataFrame, *, per_gpu: int = 1, limit: int = 4, meeting_slo_only: bool = True
) -> pd.DataFrame:
    """The accepted layouts cheapest at their roofline knee, at most ``per_gpu`` per GPU type.

    Spreading the shortlist over GPU types keeps the measured comparison across hardware rather
    than among near-identical layouts of the cheapest GPU. With ``meeting_slo_only`` a layout
    whose roofline TPOT misses the SLO even for one sequence is left out: no load can fix it.
    """
    accepted = frame[frame["accepted"].astype(bool)]
    if meeting_slo_only and "roofline_meets_slo" in accepted:
        accepted = accepted[accepted["roofline_meets_slo"].astype(bool)]
    if accepted.empty:
        raise ConfigError(
            f"no layout of {frame.attrs.get('model', 'the model')} fits any instance type and "
            "meets the TPOT target on the roofline; lower max_model_len, raise max_nodes or "
            "relax the SLO"
        )
    key = "roofline_knee_usd_per_mtok" if "roofline_knee_usd_per_mtok" in accepted else None
    ranked = accepted.sort_values(key or "roofline_usd_per_mtok")
    picked = ranked.groupby("gpu", sort=False).head(per_gpu).head(limit)
    out = picked.reset_index(drop=True)
    out.attrs.update(frame.attrs)
    return out


@dataclass(frozen=True)
class SweepSettings:
    """The open-loop load steps applied to every shortlisted engine (bounded in time).

    Attributes:
        load_fractions: the step rates as fractions of each layout's roofline knee rate,
            lowest first; the sweep of a layout stops after its first step that misses the SLO.
        duration_s: seconds of Poisson arrivals per step.
        warmup_s: the first seconds of a step, left out of every number (the engine fills up).
        input_tokens, output_tokens: every request's shape (``ignore_eos``: exact lengths).
        request_timeout_s: per request.
        seed: of the arrival times and prompts.
        stop_after_miss: False sweeps every fraction even past the knee.
    """

    load_fractions: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
    duration_s: float = 2.5
    warmup_s: float = 0.5
    input_tokens: int = 128
    output_tokens: int = 16
    request_timeout_s: float = 30.0
    seed: int = 0
    stop_after_miss: bool = True

    def __post_init__(self) -> None:
        fractions = self.load_fractions
        if not fractions or min(fractions) <= 0 or list(fractions) != sorted(fractions):
            raise LoadTestError(
                f"load_fractions={fractions}: give rising fractions > 0 of the knee rate"
            )
        if not 0 < self.duration_s <= 120:
            raise LoadTestError(f"duration_s={self.duration_s}: give 0 < duration_s <= 120")
        if not 0 <= self.warmup_s < self.duration_s:
            raise LoadTestError(
                f"warmup_s={self.warmup_s}: give 0 <= warmup_s < duration_s={self.duration_s}"
            )


@dataclass(frozen=True)
class Measurement:
    """What one load step measured on one engine over its steady window (after the warm-up).

    ``requests`` counts the requests sent in the window; the latency percentiles are over its
    completed ones. ``output_tokens_per_s`` is the engine's own generation rate over the window
    (``vllm:generation_tokens``), whoever the tokens belonged to; ``offered_tokens_per_s`` what
    the window's requests asked for (an engine that keeps up delivers about that).
    """

    rate_rps: float
    requests: int
    completed: int
    failed: int
    output_tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float
    requests_waiting_mean: float
    offered_tokens_per_s: float


# (url, served model name, request rate, settings) -> Measurement
MeasureFn = Callable[[str, str, float, SweepSettings], Awaitable[Measurement]]

_SAMPLE_EVERY_S = 0.25


async def _sample_engine(url: str, settings: SweepSettings) -> list[tuple[float, float, float]]:
    """(time, generation tokens so far, requests waiting) from ``/metrics`` over the window."""
    import aiohttp

    from labutils.metrics.parse import families

    samples: list[tuple[float, float, float]] = []
    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        at_s = settings.warmup_s
        while at_s <= settings.duration_s + 1e-9:
            await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
            async with session.get(f"{url}/metrics") as resp:
                text = await resp.text()
            now = time.monotonic() - start
            values = {"vllm:generation_tokens_total": 0.0, "vllm:num_requests_waiting": 0.0}
            for family in families(text, where=f"{url}/metrics"):
                for sample in family.samples:
                    if sample.name in values:
                        values[sample.name] += sample.value
            samples.append(
                (now, values["vllm:generation_tokens_total"], values["vllm:num_requests_waiting"])
            )
            at_s += _SAMPLE_EVERY_S
    return samples


def _percentile_ms(values: pd.Series, q: float) -> float:
    clean = values.dropna().to_numpy(float)
    return float(np.percentile(clean, q) * 1e3) if clean.size else math.nan


async def _measure_open_loop(
    url: str, model: str, rate_rps: float, settings: SweepSettings
) -> Measurement:
    from labutils.loadtest import open_loop, run_load_async

    schedule = open_loop(
        rate_rps,
        arrival="poisson",
        duration_s=settings.duration_s,
        input_tokens=settings.input_tokens,
        output_tokens=settings.output_tokens,
        seed=settings.seed,
    )
    sampler = asyncio.create_task(_sample_engine(url, settings))
    result = await run_load_async(
        schedule, url, model, timeout_s=settings.request_timeout_s, progress=False
    )
    samples = await sampler
    frame = result.to_frame()
    window = frame[frame["scheduled_s"] >= settings.warmup_s]
    ok = window[window["outcome"] == "ok"]
    (t0, tokens0, _), (t1, tokens1, _) = samples[0], samples[-1]
    return Measurement(
        rate_rps=rate_rps,
        requests=len(window),
        completed=len(ok),
        failed=len(window) - len(ok),
        output_tokens_per_s=(tokens1 - tokens0) / (t1 - t0) if t1 > t0 else math.nan,
        ttft_p50_ms=_percentile_ms(ok["ttft_s"], 50),
        ttft_p95_ms=_percentile_ms(ok["ttft_s"], 95),
        tpot_p50_ms=_percentile_ms(ok["tpot_s"], 50),
        tpot_p95_ms=_percentile_ms(ok["tpot_s"], 95),
        requests_waiting_mean=float(np.mean([w for _, _, w in samples])),
        # what the requests sent in the window asked for (the Poisson draw, not the mean rate)
        offered_tokens_per_s=len(window)
        * settings.output_tokens
        / (settings.duration_s - settings.warmup_s),
    )


_LAYOUT_COLUMNS = (
    "layout",
    "instance_type",
    "gpu",
    "gpus_per_node",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "nodes",
    "gpus",
    "engines",
    "usd_per_hour",
    "roofline_knee_rps",
    "roofline_knee_tpot_ms",
    "roofline_knee_output_tokens_per_s",
)

_ENGINE_START_TIMEOUT_S = 60.0


@dataclass
class _Engine:
    """One simulated engine process (``python -m labutils.sim serve``) on 127.0.0.1."""

    layout: str
    proc: asyncio.subprocess.Process
    url: str = ""

    async def state(self) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/lab/state") as r:
            return dict(await r.json())

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def _start_engine(
    layout: pd.Series, model: str, max_model_len: int | None, max_num_seqs: int
) -> _Engine:
    """Start the layout's engine in its own process, so that the simulated GPU keeps time on
    its own CPU core while this process sends the load (in one process, a fast GPU's steps ran
    late whenever the load generator was busy)."""
    from labutils.config import project_root

    served = lookup_model(model).hf_id
    argv = [
        sys.executable, "-m", "labutils.sim", "serve", model, "--host", "127.0.0.1",
        "--port", "0", "--gpu", str(layout["gpu"]),
        "--tensor-parallel-size", str(int(layout["tensor_parallel_size"])),
        "--pipeline-parallel-size", str(int(layout["pipeline_parallel_size"])),
        "--max-num-seqs", str(max_num_seqs), "--served-model-name", served,
        "--lab-group", str(layout["layout"]),
    ]  # fmt: skip
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    path = os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"},
    )
    engine = _Engine(str(layout["layout"]), proc)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), _ENGINE_START_TIMEOUT_S)
        engine.url = f"http://127.0.0.1:{int(json.loads(line)['port'])}"
    except (TimeoutError, ValueError, KeyError, json.JSONDecodeError):
        await engine.stop()
        err = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
        raise SimulatorError(
            f"sizing sweep: the simulated engine for {engine.layout} did not start: "
            f"{(err or ['no output'])[-1][:300]}"
        ) from None
    return engine


async def _measure_layout(
    layout: pd.Series,
    engine: _Engine,
    model: str,
    settings: SweepSettings,
    slo: LatencySlo,
    measure: MeasureFn,
) -> list[dict[str, Any]]:
    served = lookup_model(model).hf_id
    rows = []
    for fraction in settings.load_fractions:
        rate = fraction * float(layout["roofline_knee_rps"])
        before = await engine.state()
        started = time.monotonic()
        measured = await measure(engine.url, served, rate, settings)
        after = await engine.state()
        busy = after["model_busy_s"] - before["model_busy_s"]
        wall = after["step_wall_s"] - before["step_wall_s"]
        row = {
            **{k: layout[k] for k in _LAYOUT_COLUMNS},
            "load_fraction": fraction,
            "step_wall_s": time.monotonic() - started,
            **vars(measured),
            # > 0: the simulated steps ran slower than the model (this machine's CPU, not the
            # GPU, was the limit), so the step understates the GPU.
            "sim_timing_error": wall / busy - 1 if busy else 0.0,
        }
        rows.append(row)
        if settings.stop_after_miss and slo.misses(row):
            break
    return rows


def _derive_costs(frame: pd.DataFrame) -> pd.DataFrame:
    node_tokens_per_s = frame["output_tokens_per_s"] * frame["engines"]
    frame["tokens_per_s_per_gpu"] = node_tokens_per_s / frame["gpus"]
    frame["usd_per_mtok"] = usd_per_mtok(frame["usd_per_hour"], node_tokens_per_s)
    frame["delivered_share"] = frame["output_tokens_per_s"] / frame["offered_tokens_per_s"]
    return frame


async def sweep_async(
    layouts: pd.DataFrame,
    settings: SweepSettings | None = None,
    *,
    slo: LatencySlo | None = None,
    measure: MeasureFn | None = None,
    max_num_seqs: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Sweep every layout in ``layouts`` (rows of :func:`candidates`) to its knee.

    One simulated engine per layout runs in its own process on a free 127.0.0.1 port and gets
    Poisson load at ``load_fraction x roofline_knee_rps`` per step, rising until a step misses
    ``slo``; it is stopped before the next layout is loaded.

    Args:
        layouts: accepted rows of :func:`candidates` (e.g. from :func:`shortlist`).
        settings: load fractions, step duration, warm-up and request shape. The request shape
            should be the one ``layouts`` was predicted for (its knee rates depend on it).
        slo: where each layout's sweep stops (default :class:`LatencySlo`).
        measure: the load step (default: ``labutils.loadtest`` open loop plus ``/metrics``);
            swap it to drive the engine another way.
        max_num_seqs: ``--max-num-seqs`` of each engine.
        progress: show a tqdm bar over the steps.

    Returns:
        One row per (layout, step) with the measurement, ``n`` beside the percentiles
        (``requests``), ``tokens_per_s_per_gpu``, ``usd_per_mtok`` and ``sim_timing_error``.

    Raises:
        ConfigError: a layout was not accepted by :func:`candidates`.
        WaitTimeout: a load step ran far past its duration.
    """
    settings = settings or SweepSettings()
    slo = slo or LatencySlo()
    measure = measure or _measure_open_loop
    model = str(layouts.attrs.get("model") or "")
    if not model:
        raise ConfigError("sweep: layouts carry no model; pass rows of sizing.candidates(...)")
    rejected = layouts[~layouts["accepted"].astype(bool)]
    if not rejected.empty:
        first = rejected.iloc[0]
        raise ConfigError(f"sweep: {first['layout']} was rejected: {first['reason']}")
    shape = (layouts.attrs.get("input_tokens"), layouts.attrs.get("output_tokens"))
    if shape != (None, None) and shape != (settings.input_tokens, settings.output_tokens):
        raise ConfigError(
            f"sweep: layouts were predicted for {shape[0]} in / {shape[1]} out tokens but the "
            f"settings send {settings.input_tokens} / {settings.output_tokens}; pass the same "
            "input_tokens/output_tokens to candidates() and SweepSettings"
        )
    max_model_len = layouts.attrs.get("max_model_len")
    # A step may overrun its duration by the last requests' run time; far beyond that it hangs.
    step_limit_s = settings.duration_s + 2 * settings.request_timeout_s
    steps = len(layouts) * len(settings.load_fractions)
    rows: list[dict[str, Any]] = []
    with progress_bar(total=steps, desc="sizing sweep", unit="step", disable=not progress) as bar:

        async def timed(url: str, name: str, rate: float, s: SweepSettings) -> Measurement:
            try:
                return await asyncio.wait_for(measure(url, name, rate, s), step_limit_s)
            except TimeoutError:
                raise WaitTimeout(
                    f"sizing sweep: load step {rate:.1f} req/s on {url} still running after "
                    f"{step_limit_s:.0f} s (duration {s.duration_s} s); last status: "
                    f"{bar.n}/{steps} steps done"
                ) from None
            finally:
                bar.update(1)

        # All engines start at once (each in its own process), the sweep then loads one at a
        # time; an idle engine costs no CPU.
        started = await asyncio.gather(
            *(_start_engine(row, model, max_model_len, max_num_seqs) for _, row in
              layouts.iterrows()),
            return_exceptions=True,
        )  # fmt: skip
        engines = [e for e in started if isinstance(e, _Engine)]
        try:
            for error in started:
                if isinstance(error, BaseException):
                    raise error
            for (_, layout), engine in zip(layouts.iterrows(), engines, strict=True):
                bar.set_postfix_str(str(layout["layout"]))
                rows.extend(await _measure_layout(layout, engine, model, settings, slo, timed))
                await engine.stop()
        finally:
            await asyncio.gather(*(e.stop() for e in engines))
    frame = _derive_costs(pd.DataFrame(rows))
    frame.attrs.update(layouts.attrs)
    frame.attrs.update(
        input_tokens=settings.input_tokens,
        output_tokens=settings.output_tokens,
        duration_s=settings.duration_s,
        warmup_s=settings.warmup_s,
        slo_tpot_p50_ms=slo.tpot_p50_ms,
        slo_ttft_p95_ms=slo.ttft_p95_ms,
        simulated=True,
    )
    return frame


def sweep(
    layouts: pd.DataFrame,
    settings: SweepSettings | None = None,
    *,
    slo: LatencySlo | None = None,
    measure: MeasureFn | None = None,
    max_num_seqs: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Synchronous :func:`sweep_async` (works in scripts and inside Jupyter)."""
    return run_sync(
        sweep_async(
            layouts,
            settings,
            slo=slo,
            measure=measure,
            max_num_seqs=max_num_seqs,
            progress=progress,
        )
    )


def knee_points(frame: pd.DataFrame, slo: LatencySlo | None = None) -> pd.DataFrame:
    """Each layout's knee: its highest-rate step that meets ``slo``, cheapest first.

    A layout with no step meeting the SLO is kept with its lowest-rate step, ``meets_slo``
    False, after the others. ``next_rate_rps``/``next_misses`` say what the step above the knee
    missed (why the knee is there); NaN/empty when the sweep stopped without one.
    ``late_steps`` counts the layout's steps whose simulated steps ran more than
    :data:`SIM_LATE_SHARE` slower than the model (this machine's CPU was the limit).
    """
    slo = slo or LatencySlo()
    marked = frame.copy()
    misses = [slo.misses(row) for _, row in marked.iterrows()]
    marked["meets_slo"] = [not m for m in misses]
    marked["slo_misses"] = ["; ".join(m) for m in misses]
    best = []
    for _, part in marked.groupby("layout", sort=False):
        part = part.sort_values("rate_rps")
        ok = part[part["meets_slo"]]
        row = (ok.iloc[-1] if not ok.empty else part.iloc[0]).copy()
        above = part[part["rate_rps"] > row["rate_rps"]]
        row["next_rate_rps"] = float(above["rate_rps"].iloc[0]) if not above.empty else math.nan
        row["next_misses"] = str(above["slo_misses"].iloc[0]) if not above.empty else ""
        timing = part["sim_timing_error"] if "sim_timing_error" in part else pd.Series([0.0])
        row["late_steps"] = int((timing > SIM_LATE_SHARE).sum())
        best.append(row)
    out = pd.DataFrame(best).sort_values(["meets_slo", "usd_per_mtok"], ascending=[False, True])
    out = out.reset_index(drop=True)
    out.attrs.update(frame.attrs)
    return out


@dataclass(frozen=True)
class Recommendation:
    """The right-sized layout, its operating point (the knee) and why it was chosen."""

    layout: str
    rate_rps: float
    usd_per_mtok: float
    reasons: list[str]
    best_points: pd.DataFrame = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """Each layout's knee (its highest load meeting the SLO), cheapest first."""
        return self.best_points


def recommend(frame: pd.DataFrame, slo: LatencySlo | None = None) -> Recommendation:
    """Pick the layout whose knee is cheapest per million output tokens.

    Args:
        frame: the result of :func:`sweep`.
        slo: latency targets (default TPOT p50 <= 50 ms, TTFT p95 <= 2 s).

    Raises:
        ConfigError: no measured point meets the SLO (the message names the closest).
    """
    slo = slo or LatencySlo()
    if frame.empty:
        raise ConfigError("recommend: the sweep frame is empty; run sizing.sweep(...) first")
    best = knee_points(frame, slo)
    meeting = best[best["meets_slo"]]
    if meeting.empty:
        closest = best.sort_values("tpot_p50_ms").iloc[0]
        raise ConfigError(
            f"no measured layout meets TPOT p50 <= {slo.tpot_p50_ms:g} ms and TTFT p95 <= "
            f"{slo.ttft_p95_ms:g} ms; closest {closest['layout']} ({closest['slo_misses']}): "
            "relax the SLO, lower the load fractions or add faster layouts"
        )
    pick = meeting.iloc[0]
    as_of = frame.attrs.get("prices_as_of", "?")
    reasons = [
        f"{pick['layout']} at {pick['rate_rps']:.1f} requests/s, its highest measured load that "
        f"meets the SLO, is the cheapest: ${pick['usd_per_mtok']:.3f} per million output tokens "
        f"({pick['tokens_per_s_per_gpu']:,.0f} output tokens/s per GPU, "
        f"${pick['usd_per_hour']:.3f}/h for {int(pick['nodes'])} node(s), prices as of {as_of}).",
        f"There it meets the SLO with TPOT p50 {pick['tpot_p50_ms']:.1f} ms <= "
        f"{slo.tpot_p50_ms:g} ms and TTFT p95 {pick['ttft_p95_ms']:.0f} ms <= "
        f"{slo.ttft_p95_ms:g} ms (n = {int(pick['requests'])} requests).",
        f"It sustained {pick['load_fraction']:.0%} of its roofline knee rate "
        f"({pick['roofline_knee_rps']:.1f} requests/s).",
    ]
    if pick["next_misses"]:
        reasons.append(
            f"Loading {pick['layout']} harder ({pick['next_rate_rps']:.1f} requests/s) misses "
            f"the SLO: {pick['next_misses']}."
        )
    if len(meeting) > 1:
        runner = meeting.iloc[1]
        reasons.append(
            f"The next cheapest layout at its knee, {runner['layout']}, costs "
            f"${runner['usd_per_mtok']:.3f} per million tokens "
            f"({runner['usd_per_mtok'] / pick['usd_per_mtok']:.1f}x)."
        )
    for _, row in best[~best["meets_slo"]].iterrows():
        reasons.append(
            f"{row['layout']} never met the SLO; at its lowest load ({row['rate_rps']:.1f} "
            f"requests/s) it misses: {row['slo_misses']}."
        )
    for _, row in best[best["late_steps"] > 0].iterrows():
        reasons.append(
            f"Caution: {int(row['late_steps'])} step(s) of {row['layout']} ran more than "
            f"{SIM_LATE_SHARE:.0%} slower than its simulated GPU (this machine's CPU was busy), "
            "so its knee may be understated; rerun on an idle machine before ranking close calls."
        )
    return Recommendation(
        layout=str(pick["layout"]),
        rate_rps=float(pick["rate_rps"]),
        usd_per_mtok=float(pick["usd_per_mtok"]),
        reasons=reasons,
        best_points=best,
    )


def check_recommendation(
    frame: pd.DataFrame, rec: Recommendation, slo: LatencySlo | None = None
) -> pd.DataFrame:
    """Check the lesson against the measurements: raise if it does not hold.

    Checks, recomputed from ``frame`` (not from ``rec``'s own table): the recommended point meets
    the SLO; no knee of another layout is cheaper; every layout was swept to its knee (its last
    step missed the SLO, so the cost is taken where load stops paying, not below it); and in
    every layout with two or more steps, more load raised the output tokens/s per GPU.

    Returns:
        One row per check with its verdict and the numbers behind it.

    Raises:
        ValidationError: a check failed (``problems`` lists each one).
    """
    slo = slo or LatencySlo()
    picked = frame[
        (frame["layout"] == rec.layout) & np.isclose(frame["rate_rps"].astype(float), rec.rate_rps)
    ]
    if picked.empty:
        raise ValidationError(
            f"recommended {rec.layout} at {rec.rate_rps:.1f} requests/s is not in the sweep "
            "frame; pass the frame recommend() was given"
        )
    row = picked.iloc[0]
    misses = slo.misses(row)
    meets = pd.Series([not slo.misses(r) for _, r in frame.iterrows()], index=frame.index)
    knees = frame[meets].sort_values("rate_rps").groupby("layout").tail(1)
    cheapest = float(knees["usd_per_mtok"].min()) if not knees.empty else math.nan
    checks = [
        ("recommended point meets the SLO", not misses, "; ".join(misses) or "all targets met"),
        (
            "no other layout's knee is cheaper",
            row["usd_per_mtok"] <= cheapest,
            f"${row['usd_per_mtok']:.3f} vs cheapest knee ${cheapest:.3f} per Mtok",
        ),
    ]
    for layout, part in frame.groupby("layout", sort=False):
        ordered = part.sort_values("rate_rps")
        last = ordered.iloc[-1]
        last_misses = slo.misses(last)
        checks.append(
            (
                f"{layout}: swept to its knee",
                bool(last_misses),
                f"highest step {last['rate_rps']:.1f} req/s: "
                + ("; ".join(last_misses) or "still meets the SLO: raise load_fractions"),
            )
        )
        if len(ordered) < 2:
            continue  # one step: nothing to compare (it missed the SLO at its lowest load)
        low, high = ordered.iloc[0], ordered.iloc[-1]
        checks.append(
            (
                f"{layout}: more load raises tokens/s per GPU",
                bool(high["tokens_per_s_per_gpu"] > low["tokens_per_s_per_gpu"]),
                f"{low['rate_rps']:.1f} req/s: {low['tokens_per_s_per_gpu']:,.0f}, "
                f"{high['rate_rps']:.1f} req/s: {high['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU",
            )
        )
    table = pd.DataFrame(checks, columns=["check", "holds", "evidence"])
    failed = table[~table["holds"]]
    if not failed.empty:
        problems = [f"{c}: {e}" for c, e in zip(failed["check"], failed["evidence"], strict=True)]
        raise ValidationError(
            f"sizing lesson does not hold ({len(problems)} check(s)): {problems[0]}", problems
        )
    return table
