"""Right-sizing: which (instance type, TP, PP) layout serves a model cheapest within its SLOs.

Three steps, each a small public function:

1. :func:`candidates` lists every (instance type, TP, PP) layout of
   :data:`labutils.catalog.INSTANCE_TYPES` for a model (TP a divisor of the GPUs per node, PP the
   nodes), asks the simulator's memory plan (:func:`labutils.sim.perf.plan_memory`) whether vLLM
   would load it, says why each rejected one was refused, and puts the roofline prediction of
   :func:`labutils.sim.perf.step_time_s` and the price from ``labutils/data/prices.yaml`` beside
   the accepted ones.
2. :func:`sweep` starts one simulated engine per shortlisted layout on 127.0.0.1 and drives it
   with short closed-loop load steps (``labutils.loadtest``); it derives output tokens/s per GPU
   and USD per million output tokens (instance price x nodes / output tokens per hour).
3. :func:`recommend` picks the cheapest measured operating point that meets the SLO and explains
   why in sentences built from the measured numbers.

A node whose GPUs are not all used by one engine (TP smaller than the GPUs per node) runs
``GPUs per node / TP`` independent engines; they do not share anything in vLLM, so one engine is
measured and the node's throughput is that times the engine count.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    pass

__all__ = [
    "LatencySlo",
    "Measurement",
    "Recommendation",
    "SweepSettings",
    "candidates",
    "check_recommendation",
    "layout_label",
    "recommend",
    "roofline",
    "shortlist",
    "sweep",
    "sweep_async",
]

_SECONDS_PER_HOUR = 3600.0
_TOKENS_PER_MTOK = 1e6


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
    approach. A closed loop whose users start together sends prompts in waves instead, so it
    measures less (``benchmarks/sizing_step_length.py``). TTFT is the prefill of one prompt on
    an idle engine.

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


def candidates(
    model: str,
    *,
    max_model_len: int | None = 4096,
    max_nodes: int = 2,
    max_num_seqs: int = 256,
    concurrency: int = 16,
    input_tokens: int = 256,
    output_tokens: int = 64,
    instance_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every (instance type, TP, PP) layout for ``model``, accepted or with the reason it is not.

    Args:
        model: Hugging Face id or catalogue alias.
        max_model_len: the ``--max-model-len`` each engine is asked for (vLLM refuses a layout
            whose KV cache cannot hold one such sequence).
        max_nodes: largest PP (nodes per group) tried; TP > 1 across nodes is not tried.
        max_num_seqs: ``--max-num-seqs`` of each engine.
        concurrency, input_tokens, output_tokens: the load at which the roofline columns are
            predicted.
        instance_types: restrict to these (default: the whole catalogue).

    Returns:
        One row per layout: ``layout, instance_type, gpu, gpus_per_node, tensor_parallel_size,
        pipeline_parallel_size, nodes, gpus, engines, accepted, reason, num_gpu_blocks,
        kv_cache_tokens, usd_per_hour, roofline_*`` and ``roofline_usd_per_mtok``.
    """
    spec = lookup_model(model)
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
                    row["reason"] = (
                        f"no price for {name} in labutils/data/prices.yaml "
                        f"(as of {prices.get('as_of')}); add it there"
                    )
                    rows.append(row)
                    continue
                row["accepted"] = True
                row["usd_per_hour"] = float(price) * pp
                pred = roofline(cfg, concurrency, input_tokens, output_tokens)
                row.update(pred)
                node_tokens_per_hour = (
                    pred["roofline_output_tokens_per_s"] * engines * _SECONDS_PER_HOUR
                )
                row["roofline_tokens_per_s_per_gpu"] = (
                    pred["roofline_output_tokens_per_s"] * engines / row["gpus"]
                )
                row["roofline_usd_per_mtok"] = (
                    row["usd_per_hour"] / node_tokens_per_hour * _TOKENS_PER_MTOK
                )
                rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update(
        model=spec.hf_id,
        max_model_len=max_model_len,
        prices_as_of=prices.get("as_of"),
        prices_region=prices.get("region"),
    )
    return frame


def shortlist(frame: pd.DataFrame, *, per_gpu: int = 1, limit: int = 4) -> pd.DataFrame:
    """The accepted layouts with the lowest roofline cost, at most ``per_gpu`` per GPU type.

    Spreading the shortlist over GPU types keeps the measured comparison across hardware rather
    than among near-identical layouts of the cheapest GPU.
    """
    accepted = frame[frame["accepted"]]
    if accepted.empty:
        raise ConfigError(
            f"no layout of {frame.attrs.get('model', 'the model')} fits any instance type; "
            "lower max_model_len or raise max_nodes"
        )
    ranked = accepted.sort_values("roofline_usd_per_mtok")
    picked = ranked.groupby("gpu", sort=False).head(per_gpu).head(limit)
    out = picked.reset_index(drop=True)
    out.attrs.update(frame.attrs)
    return out


@dataclass(frozen=True)
class SweepSettings:
    """The closed-loop load applied to every shortlisted engine (bounded in time)."""

    concurrencies: tuple[int, ...] = (1, 8, 32)
    duration_s: float = 3.0
    input_tokens: int = 256
    output_tokens: int = 64
    request_timeout_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise LoadTestError(f"concurrencies={self.concurrencies}: give at least one level >= 1")
        if not 0 < self.duration_s <= 120:
            raise LoadTestError(f"duration_s={self.duration_s}: give 0 < duration_s <= 120")


@dataclass(frozen=True)
class Measurement:
    """What one load step measured on one engine (latencies in ms, throughput per engine)."""

    requests: int
    completed: int
    failed: int
    output_tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float


# (url, served model name, concurrency, settings) -> Measurement
MeasureFn = Callable[[str, str, int, SweepSettings], Awaitable[Measurement]]


async def _measure_with_loadtest(
    url: str, model: str, concurrency: int, settings: SweepSettings
) -> Measurement:
    try:
        from labutils.loadtest import closed_loop, run_load_async, summarize
    except ModuleNotFoundError as exc:
        if exc.name and "labutils.loadtest".startswith(exc.name):
            raise ConfigError(
                "labutils.loadtest is not in this checkout; update it (git pull) or pass "
                "measure= to sizing.sweep"
            ) from None
        raise

    schedule = closed_loop(
        concurrency,
        duration_s=settings.duration_s,
        input_tokens=settings.input_tokens,
        output_tokens=settings.output_tokens,
        seed=settings.seed,
    )
    result = await run_load_async(
        schedule, url, model, timeout_s=settings.request_timeout_s, progress=False
    )
    row = summarize(result, percentiles=(50, 95)).to_frame().iloc[0]
    return Measurement(
        requests=int(row["requests"]),
        completed=int(row["completed"]),
        failed=int(row["failed"]),
        output_tokens_per_s=float(row["output_throughput"]),
        ttft_p50_ms=float(row["p50_ttft_ms"]),
        ttft_p95_ms=float(row["p95_ttft_ms"]),
        tpot_p50_ms=float(row["p50_tpot_ms"]),
        tpot_p95_ms=float(row["p95_tpot_ms"]),
    )


async def _measure_layout(
    layout: pd.Series,
    model: str,
    settings: SweepSettings,
    max_model_len: int | None,
    max_num_seqs: int,
    measure: MeasureFn,
) -> list[dict[str, Any]]:
    from labutils.sim.server import ServeOptions, build_engine, start_servers

    tp, pp = int(layout["tensor_parallel_size"]), int(layout["pipeline_parallel_size"])
    served = lookup_model(model).hf_id
    engine = build_engine(
        model,
        str(layout["gpu"]),
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        served_model_name=served,
    )
    (server,) = await start_servers([engine], [ServeOptions(served, group=str(layout["layout"]))])
    rows = []
    try:
        url = f"http://127.0.0.1:{server.port}"
        for concurrency in settings.concurrencies:
            started = time.monotonic()
            measured = await measure(url, served, concurrency, settings)
            row = {
                **{k: layout[k] for k in _LAYOUT_COLUMNS},
                "concurrency": concurrency,
                "step_wall_s": time.monotonic() - started,
                **vars(measured),
            }
            row.update(
                roofline(engine.cfg, concurrency, settings.input_tokens, settings.output_tokens)
            )
            rows.append(row)
    finally:
        await server.stop()
    return rows


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
)


def _derive_costs(frame: pd.DataFrame) -> pd.DataFrame:
    node_tokens_per_s = frame["output_tokens_per_s"] * frame["engines"]
    frame["tokens_per_s_per_gpu"] = node_tokens_per_s / frame["gpus"]
    tokens_per_hour = node_tokens_per_s * _SECONDS_PER_HOUR
    # A step that produced no tokens has no cost per token: NaN, never 0 or inf.
    frame["usd_per_mtok"] = (frame["usd_per_hour"] / tokens_per_hour * _TOKENS_PER_MTOK).where(
        tokens_per_hour > 0
    )
    frame["roofline_usd_per_mtok"] = (
        frame["usd_per_hour"]
        / (frame["roofline_output_tokens_per_s"] * frame["engines"] * _SECONDS_PER_HOUR)
        * _TOKENS_PER_MTOK
    )
    frame["measured_over_roofline"] = (
        frame["output_tokens_per_s"] / frame["roofline_output_tokens_per_s"]
    )
    return frame


async def sweep_async(
    layouts: pd.DataFrame,
    settings: SweepSettings | None = None,
    *,
    measure: MeasureFn | None = None,
    max_num_seqs: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure every layout in ``layouts`` (rows of :func:`candidates`) under ``settings``.

    One simulated engine per layout runs in this event loop on a free 127.0.0.1 port, is
    loaded at each concurrency for ``duration_s`` and stopped before the next layout starts.

    Args:
        layouts: accepted rows of :func:`candidates` (e.g. from :func:`shortlist`).
        settings: concurrencies, step duration and token counts.
        measure: the load step (default: ``labutils.loadtest`` closed loop); swap it to drive
            the engine another way.
        max_num_seqs: ``--max-num-seqs`` of each engine.
        progress: show a tqdm bar over the steps.

    Returns:
        One row per (layout, concurrency) with the measurement, the roofline prediction beside
        it, ``tokens_per_s_per_gpu`` and ``usd_per_mtok``.

    Raises:
        ConfigError: a layout was not accepted by :func:`candidates`.
        WaitTimeout: a load step ran far past its duration.
    """
    settings = settings or SweepSettings()
    measure = measure or _measure_with_loadtest
    model = str(layouts.attrs.get("model") or "")
    if not model:
        raise ConfigError("sweep: layouts carry no model; pass rows of sizing.candidates(...)")
    rejected = layouts[~layouts["accepted"].astype(bool)]
    if not rejected.empty:
        first = rejected.iloc[0]
        raise ConfigError(f"sweep: {first['layout']} was rejected: {first['reason']}")
    max_model_len = layouts.attrs.get("max_model_len")
    # A step may overrun its duration by the last requests' run time; far beyond that it hangs.
    step_limit_s = settings.duration_s + 2 * settings.request_timeout_s
    steps = len(layouts) * len(settings.concurrencies)
    rows: list[dict[str, Any]] = []
    with progress_bar(total=steps, desc="sizing sweep", unit="step", disable=not progress) as bar:

        async def timed(url: str, name: str, users: int, s: SweepSettings) -> Measurement:
            try:
                return await asyncio.wait_for(measure(url, name, users, s), step_limit_s)
            except TimeoutError:
                raise WaitTimeout(
                    f"sizing sweep: load step c={users} on {url} still running after "
                    f"{step_limit_s:.0f} s (duration {s.duration_s} s); last status: "
                    f"{bar.n}/{steps} steps done"
                ) from None
            finally:
                bar.update(1)

        for _, layout in layouts.iterrows():
            bar.set_postfix_str(str(layout["layout"]))
            rows.extend(
                await _measure_layout(layout, model, settings, max_model_len, max_num_seqs, timed)
            )
    frame = _derive_costs(pd.DataFrame(rows))
    frame.attrs.update(layouts.attrs)
    frame.attrs.update(
        input_tokens=settings.input_tokens,
        output_tokens=settings.output_tokens,
        duration_s=settings.duration_s,
        simulated=True,
    )
    return frame


def sweep(
    layouts: pd.DataFrame,
    settings: SweepSettings | None = None,
    *,
    measure: MeasureFn | None = None,
    max_num_seqs: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Synchronous :func:`sweep_async` (works in scripts and inside Jupyter)."""
    return run_sync(
        sweep_async(
            layouts, settings, measure=measure, max_num_seqs=max_num_seqs, progress=progress
        )
    )


@dataclass(frozen=True)
class LatencySlo:
    """Latency targets on percentiles of a load step (ms)."""

    tpot_p50_ms: float = 50.0
    ttft_p95_ms: float = 2000.0

    def misses(self, row: pd.Series) -> list[str]:
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


@dataclass(frozen=True)
class Recommendation:
    """The right-sized layout, its operating point and why it was chosen."""

    layout: str
    concurrency: int
    usd_per_mtok: float
    reasons: list[str]
    best_points: pd.DataFrame = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """Each layout's cheapest point that meets the SLO (or its best miss), cheapest first."""
        return self.best_points


def _best_points(frame: pd.DataFrame, slo: LatencySlo) -> pd.DataFrame:
    marked = frame.copy()
    misses = [slo.misses(row) for _, row in marked.iterrows()]
    marked["meets_slo"] = [not m for m in misses]
    marked["slo_misses"] = ["; ".join(m) for m in misses]
    best = []
    for _, part in marked.groupby("layout", sort=False):
        ok = part[part["meets_slo"]]
        pool = ok if not ok.empty else part
        best.append(pool.sort_values("usd_per_mtok", na_position="last").iloc[0])
    out = pd.DataFrame(best).sort_values(["meets_slo", "usd_per_mtok"], ascending=[False, True])
    out = out.reset_index(drop=True)
    out.attrs.update(frame.attrs)
    return out


def recommend(frame: pd.DataFrame, slo: LatencySlo | None = None) -> Recommendation:
    """Pick the cheapest measured (layout, concurrency) per million output tokens meeting ``slo``.

    Args:
        frame: the result of :func:`sweep`.
        slo: latency targets (default TPOT p50 <= 50 ms, TTFT p95 <= 2 s).

    Raises:
        ConfigError: no measured point meets the SLO (the message names the closest).
    """
    slo = slo or LatencySlo()
    if frame.empty:
        raise ConfigError("recommend: the sweep frame is empty; run sizing.sweep(...) first")
    best = _best_points(frame, slo)
    meeting = best[best["meets_slo"]]
    if meeting.empty:
        closest = best.sort_values("tpot_p50_ms").iloc[0]
        raise ConfigError(
            f"no measured layout meets TPOT p50 <= {slo.tpot_p50_ms:g} ms and TTFT p95 <= "
            f"{slo.ttft_p95_ms:g} ms; closest {closest['layout']} ({closest['slo_misses']}): "
            "relax the SLO, lower the concurrencies or add faster layouts"
        )
    pick = meeting.iloc[0]
    as_of = frame.attrs.get("prices_as_of", "?")
    reasons = [
        f"{pick['layout']} at concurrency {int(pick['concurrency'])} is the cheapest measured "
        f"point meeting the SLO: ${pick['usd_per_mtok']:.3f} per million output tokens "
        f"({pick['tokens_per_s_per_gpu']:,.0f} output tokens/s per GPU, "
        f"${pick['usd_per_hour']:.3f}/h for {int(pick['nodes'])} node(s), prices as of {as_of}).",
        f"It meets the SLO with TPOT p50 {pick['tpot_p50_ms']:.1f} ms <= "
        f"{slo.tpot_p50_ms:g} ms and TTFT p95 {pick['ttft_p95_ms']:.0f} ms <= "
        f"{slo.ttft_p95_ms:g} ms.",
        f"The engine delivered {pick['measured_over_roofline']:.0%} of its roofline "
        f"prediction ({pick['output_tokens_per_s']:,.0f} of "
        f"{pick['roofline_output_tokens_per_s']:,.0f} output tokens/s).",
    ]
    if len(meeting) > 1:
        runner = meeting.iloc[1]
        reasons.append(
            f"The next cheapest layout meeting the SLO, {runner['layout']}, costs "
            f"${runner['usd_per_mtok']:.3f} per million tokens "
            f"({runner['usd_per_mtok'] / pick['usd_per_mtok']:.1f}x)."
        )
    # The picked layout pushed harder: cheaper per token, but the SLO is what stops it.
    same = frame[
        (frame["layout"] == pick["layout"]) & (frame["usd_per_mtok"] < pick["usd_per_mtok"])
    ]
    for _, row in same.sort_values("usd_per_mtok").head(1).iterrows():
        reasons.append(
            f"Loading {pick['layout']} harder (concurrency {int(row['concurrency'])}) would cut "
            f"the cost to ${row['usd_per_mtok']:.3f} per million tokens but misses the SLO: "
            f"{'; '.join(slo.misses(row))}."
        )
    # Layouts that never met the SLO explain the trade-off from the other side.
    for _, row in best[~best["meets_slo"]].iterrows():
        verdict = "would be cheaper" if row["usd_per_mtok"] < pick["usd_per_mtok"] else "costs"
        reasons.append(
            f"{row['layout']} never met the SLO; at its cheapest point (concurrency "
            f"{int(row['concurrency'])}) it {verdict} ${row['usd_per_mtok']:.3f} per million "
            f"tokens but misses: {row['slo_misses']}."
        )
    return Recommendation(
        layout=str(pick["layout"]),
        concurrency=int(pick["concurrency"]),
        usd_per_mtok=float(pick["usd_per_mtok"]),
        reasons=reasons,
        best_points=best,
    )


def check_recommendation(
    frame: pd.DataFrame, rec: Recommendation, slo: LatencySlo | None = None
) -> pd.DataFrame:
    """Check the lesson against the measurements: raise if it does not hold.

    Checks, recomputed from ``frame`` (not from ``rec``'s own table): the recommended point meets
    the SLO; no measured point that meets it is cheaper; every layout's throughput per GPU rose
    from its lowest to its highest concurrency (batching pays).

    Returns:
        One row per check with its verdict and the numbers behind it.

    Raises:
        ValidationError: a check failed (``problems`` lists each one).
    """
    slo = slo or LatencySlo()
    picked = frame[(frame["layout"] == rec.layout) & (frame["concurrency"] == rec.concurrency)]
    if picked.empty:
        raise ValidationError(
            f"recommended {rec.layout} at concurrency {rec.concurrency} is not in the sweep "
            "frame; pass the frame recommend() was given"
        )
    row = picked.iloc[0]
    misses = slo.misses(row)
    meeting = frame[[not slo.misses(r) for _, r in frame.iterrows()]]
    cheapest = float(meeting["usd_per_mtok"].min()) if not meeting.empty else math.nan
    checks = [
        ("recommended point meets the SLO", not misses, "; ".join(misses) or "all targets met"),
        (
            "no SLO-meeting point is cheaper",
            row["usd_per_mtok"] <= cheapest,
            f"${row['usd_per_mtok']:.3f} vs cheapest meeting ${cheapest:.3f} per Mtok",
        ),
    ]
    for layout, part in frame.groupby("layout", sort=False):
        ordered = part.sort_values("concurrency")
        low, high = ordered.iloc[0], ordered.iloc[-1]
        checks.append(
            (
                f"{layout}: batching raises tokens/s per GPU",
                bool(high["tokens_per_s_per_gpu"] > low["tokens_per_s_per_gpu"]),
                f"c={int(low['concurrency'])}: {low['tokens_per_s_per_gpu']:,.0f}, "
                f"c={int(high['concurrency'])}: {high['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU",
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


# --- CLI ----------------------------------------------------------------------------------------
