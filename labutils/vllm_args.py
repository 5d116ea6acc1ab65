"""Parse the ``vllm serve`` command line the way vLLM does, for the subset the lab uses.

The LWS leader's container command in ``manifests/`` is the single description of an engine:
the validator checks it, the local twin configures its simulated engine from it, and
``labctl sim serve`` takes the same flags. Flag names follow vLLM's CLI (both ``--foo-bar`` and
``--foo_bar`` are accepted, as vLLM's ``FlexibleArgumentParser`` does; ``--flag=value`` too).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from labutils.errors import ConfigError

__all__ = ["VllmServeArgs", "add_vllm_serve_flags", "parse_vllm_serve"]


@dataclass(frozen=True)
class VllmServeArgs:
    """The engine-relevant part of a ``vllm serve`` invocation."""

    model: str
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    api_key: str | None = None
    nnodes: str | None = None
    node_rank: str | None = None
    master_addr: str | None = None
    headless: bool = False
    distributed_executor_backend: str | None = None
    unknown: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        """The model name clients must send (``--served-model-name`` or the model path)."""
        return self.served_model_name or self.model


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"vllm serve: {message}")


def add_vllm_serve_flags(parser: argparse.ArgumentParser) -> None:
    """Add the engine flags (named as ``vllm serve`` names them) to ``parser``."""
    add = parser.add_argument
    add("--served-model-name", dest="served_model_name")
    add("--tensor-parallel-size", "-tp", dest="tensor_parallel_size", type=int, default=1)
    add("--pipeline-parallel-size", "-pp", dest="pipeline_parallel_size", type=int, default=1)
    add("--max-num-seqs", dest="max_num_seqs", type=int, default=256)
    add("--max-num-batched-tokens", dest="max_num_batched_tokens", type=int)
    add("--max-model-len", dest="max_model_len", type=int)
    add("--gpu-memory-utilization", dest="gpu_memory_utilization", type=float, default=0.9)
    add("--api-key", dest="api_key")


def _normalise(tokens: Sequence[str]) -> list[str]:
    out = []
    for tok in tokens:
        if tok.startswith("--"):
            name, sep, value = tok.partition("=")
            out.append(name.replace("_", "-") + sep + value)
        else:
            out.append(tok)
    return out


def parse_vllm_serve(command: Sequence[str] | str) -> VllmServeArgs:
    """Parse ``vllm serve MODEL [flags]`` (a list as in a container spec, or one string).

    A container ``command: [vllm, serve]`` plus ``args: [...]`` should be passed joined. A
    ``sh -c "..."`` wrapper is unwrapped. Flags the lab does not model are kept in ``unknown``.

    Raises:
        ConfigError: not a ``vllm serve`` command, no model, or a flag with a bad value.
    """
    tokens = shlex.split(command) if isinstance(command, str) else list(command)
    if (
        len(tokens) >= 3
        and tokens[0] in ("sh", "bash", "/bin/sh", "/bin/bash")
        and tokens[1] == "-c"
    ):
        tokens = shlex.split(tokens[2])
    try:
        start = next(
            i
            for i in range(len(tokens) - 1)
            if tokens[i].endswith("vllm") and tokens[i + 1] == "serve"
        )
    except StopIteration:
        raise ConfigError(f"not a 'vllm serve' command: {' '.join(tokens)!r}") from None
    rest = _normalise(tokens[start + 2 :])
    parser = _Parser(prog="vllm serve", add_help=False)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--model", dest="model_flag")
    add_vllm_serve_flags(parser)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--nnodes")
    parser.add_argument("--node-rank", dest="node_rank")
    parser.add_argument("--master-addr", dest="master_addr")
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--distributed-executor-backend", dest="distributed_executor_backend")
    ns, unknown = parser.parse_known_args(rest)
    model = ns.model or ns.model_flag
    if not model:
        raise ConfigError("vllm serve: no model given (expected 'vllm serve MODEL ...')")
    return VllmServeArgs(
        model=model,
        served_model_name=ns.served_model_name,
        host=ns.host,
        port=ns.port,
        tensor_parallel_size=ns.tensor_parallel_size,
        pipeline_parallel_size=ns.pipeline_parallel_size,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        max_model_len=ns.max_model_len,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        api_key=ns.api_key,
        nnodes=ns.nnodes,
        node_rank=ns.node_rank,
        master_addr=ns.master_addr,
        headless=ns.headless,
        distributed_executor_backend=ns.distributed_executor_backend,
        unknown=tuple(unknown),
    )
