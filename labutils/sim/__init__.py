"""Simulated vLLM engines: GPU performance model, V1-style scheduler, vLLM's HTTP API and metrics.

Run: ``labctl sim serve MODEL --gpu a10g|...`` or the lean ``python -m labutils.sim serve`` (no
pandas/matplotlib; ~40 MB RSS). ``--port 0`` picks a free port, ``--replicas N`` hosts N engines
in one process on N ports (``--lab-group G`` becomes ``G-0 .. G-(N-1)`` then), and after binding
one JSON line per engine is printed: ``{"event": "listening", "host", "port", "replica", "zone",
"group", "model", "gpu", "num_gpu_blocks"}``. ``--model-load-s S`` keeps ``/health`` (and
``/v1/*``) at 503 for S seconds. Lab-only endpoints: ``POST /lab/fault`` ``{"mode": "ok" |
"unhealthy" | "slow", "slow_factor": 4.0}`` and ``GET /lab/state`` (queue, running, KV usage,
step timing). In-process: :func:`labutils.sim.server.build_engine` +
:func:`labutils.sim.server.start_servers`.
"""

from labutils.sim.perf import EngineConfig, MemoryPlan, StepShape, plan_memory, step_time_s

__all__ = ["EngineConfig", "MemoryPlan", "StepShape", "plan_memory", "step_time_s"]
