"""``labctl sim serve`` / ``python -m labutils.sim serve``: run simulated vLLM engines.

Kept lean (no pandas/matplotlib imports) because the local twin runs several of these processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

from labutils.catalog import GPUS
from labutils.errors import SimulatorError
from labutils.vllm_args import add_vllm_serve_flags

__all__ = [
    "add_serve_arguments",
    "serve",
]

# The lab's default instance type is g5.12xlarge (labutils.config.LabConfig), i.e. A10G GPUs.
_DEFAULT_GPU = "a10g"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``vllm serve``'s flags plus the simulator's own to ``parser``."""
    parser.add_argument("model", help="Hugging Face id (as vllm serve takes it) or alias")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    add_vllm_serve_flags(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gpu", default=_DEFAULT_GPU, type=str.lower, help=f"one of: {', '.join(GPUS)}"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="engines hosted in this process, one port each"
    )
    parser.add_argument(
        "--model-load-s", type=float, default=0.0, help="simulated load time (/health 503)"
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="measured step times for this GPU and model (benchmarks/gpu_step_profile.py), "
        "interpolated instead of the performance model",
    )
    parser.add_argument("--lab-zone", default=None, help="echoed in the x-lab-zone header")
    parser.add_argument("--lab-group", default=None, help="echoed in the x-lab-group header")


def serve(args: argparse.Namespace) -> int:
    """Run ``args.replicas`` engines until SIGINT/SIGTERM; print one JSON line per engine.

    Raises:
        SimulatorError: a configuration vLLM would refuse, or a port that cannot be bound.
    """
    if args.replicas < 1:
        raise SimulatorError(f"--replicas must be >= 1, got {args.replicas}")
    if args.model_load_s < 0:
        raise SimulatorError(f"--model-load-s must be >= 0, got {args.model_load_s}")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    # Imported here so that `labctl --help` does not pay for aiohttp.
    from labutils.sim.server import ServeOptions, build_engine, start_servers

    name = args.served_model_name or args.model
    # Like vllm serve: the key may come from the environment instead of the command line.
    api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    engines = [
        build_engine(
            args.model,
            args.gpu,
            tensor_parallel_size=args.tensor_parallel_size,
            pipeline_parallel_size=args.pipeline_parallel_size,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
            served_model_name=name,
            calibration=getattr(args, "calibration", None),
        )
        for _ in range(args.replicas)
    ]
    options = []
    for i in range(args.replicas):
        group = args.lab_group
        if group and args.replicas > 1:
            group = f"{group}-{i}"
        options.append(
            ServeOptions(
                served_model_name=name,
                api_key=api_key,
                seed=args.seed,
                model_load_s=args.model_load_s,
                zone=args.lab_zone,
                group=group,
            )
        )
    servers = await start_servers(engines, options, args.host, args.port)
    for i, server in enumerate(servers):
        line = {
            "event": "listening",
            "host": server.host,
            "port": server.port,
            "replica": i,
            "zone": server.options.zone,
            "group": server.options.group,
            "model": name,
            "gpu": args.gpu,
            "num_gpu_blocks": server.engine.plan.num_gpu_blocks,
        }
        print(json.dumps(line), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
    print(json.dumps({"event": "stopped"}), flush=True)
    sys.stdout.flush()
    return 0
