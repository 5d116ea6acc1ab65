"""Real vLLM engines (the CPU build) for the local twin and the simulator's contract tests.

The CPU build lives in its own venv (``make real-engine``); this package checks that venv
(:func:`check_environment`), builds a tiny random-weight Llama to serve
(:func:`build_tiny_model`), starts lean API servers on 127.0.0.1 (:func:`start_engine`), and
records or compares the server's API and metrics (:mod:`labutils.realengine.contract`).
"""

from labutils.realengine.env import RealEngineEnv, check_environment, check_memory, default_venv
from labutils.realengine.launcher import RealEngine, engine_command, free_port, start_engine
from labutils.realengine.model import TinyModel, TinyModelSpec, build_tiny_model

__all__ = [
    "RealEngine",
    "RealEngineEnv",
    "TinyModel",
    "TinyModelSpec",
    "build_tiny_model",
    "check_environment",
    "check_memory",
    "default_venv",
    "engine_command",
    "free_port",
    "start_engine",
]
