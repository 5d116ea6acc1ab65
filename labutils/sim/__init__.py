"""Simulated vLLM engines: GPU performance model, V1-style scheduler, vLLM's HTTP API and metrics.

``labctl sim serve`` (or the lean ``python -m labutils.sim serve``) runs them; in-process use:
``build_engine`` + ``start_servers`` from :mod:`labutils.sim.server`.
"""

from labutils.sim.perf import EngineConfig, MemoryPlan, StepShape, plan_memory, step_time_s

__all__ = ["EngineConfig", "MemoryPlan", "StepShape", "plan_memory", "step_time_s"]
