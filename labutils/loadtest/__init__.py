"""Load testing: seeded schedules, an async streaming sender, summaries.

Typical use::

    from labutils.loadtest import open_loop, run_load, summarize
    result = run_load(open_loop(20, duration_s=30, input_tokens=256, output_tokens=64),
                      endpoints.gateway_url, endpoints.model)
    summarize(result).to_frame()
"""

from labutils.loadtest.schedule import Schedule, closed_loop, make_prompt, open_loop, sweep
from labutils.loadtest.sender import (
    OUTCOMES,
    LoadTestResult,
    RequestRecord,
    run_load,
    run_load_async,
)
from labutils.loadtest.summary import (
    ClientHealth,
    LoadSummary,
    Slo,
    client_health,
    parse_slo,
    run_sweep,
    summarize,
    sweep_frame,
)

__all__ = [
    "OUTCOMES",
    "ClientHealth",
    "LoadSummary",
    "LoadTestResult",
    "RequestRecord",
    "Schedule",
    "Slo",
    "client_health",
    "closed_loop",
    "make_prompt",
    "open_loop",
    "parse_slo",
    "run_load",
    "run_load_async",
    "run_sweep",
    "summarize",
    "sweep",
    "sweep_frame",
]
