"""``python -m labutils.realengine serve MODEL [flags]``: a real vLLM engine the twin can run.

Takes the same command line as ``python -m labutils.sim serve`` (the local twin's engine
interface) and answers the same way: one JSON line ``{"event": "listening", "port", ...}`` on
stdout once the server process is started (``/health`` answers when the model has loaded,
~20-40 s later), then it runs until SIGTERM/SIGINT. The model named on the command line is
replaced by the tiny random-weight Llama (built once, cached); GPU and parallelism flags do not
apply to one CPU process and are ignored. At most ``$LAB_VLLM_MAX_REPLICAS`` (default 3) real
engines run on a machine at once: each needs ~1-1.5 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from labutils.errors import ConfigError, LabError
from labutils.realengine.env import check_environment, check_memory
from labutils.realengine.launcher import start_engine
from labutils.realengine.model import TinyModelSpec, build_tiny_model
from labutils.vllm_args import VllmServeArgs, add_vllm_serve_flags

_DEFAULT_MAX_REPLICAS = 3
_STOP_TIMEOUT_S = 3.0  # the twin SIGKILLs an engine 5 s after SIGTERM


def _registry_dir() -> Path:
    return Path(tempfile.gettempdir()) / "vllm-lws-lab-real-engines"


@contextlib.contextmanager
def _replica_slot(max_replicas: int) -> Iterator[None]:
    """Hold one of ``max_replicas`` machine-wide slots (a file named after our PID)."""
    folder = _registry_dir()
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f"{os.getpid()}.pid"
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        live = []
        for entry in folder.glob("*.pid"):
            pid = int(entry.stem)
            if psutil.pid_exists(pid):
                live.append(pid)
            else:
                entry.unlink(missing_ok=True)  # left by a killed wrapper
        if len(live) >= max_replicas:
            raise ConfigError(
                f"{len(live)} real vLLM engines already run here (PIDs "
                f"{', '.join(map(str, sorted(live)))}); the limit is {max_replicas} "
                "(LAB_VLLM_MAX_REPLICAS): scale down or stop the twin first"
            )
        mine.write_text(str(os.getpid()))
    try:
        yield
    finally:
        mine.unlink(missing_ok=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labutils.realengine")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = sub.add_parser("serve", help="serve the tiny model with a real vLLM (CPU build)")
    serve.add_argument("model", help="ignored: the tiny random-weight Llama is served")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    add_vllm_serve_flags(serve)
    # The simulator's own flags (the twin passes them): accepted, not applicable here.
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--gpu", default=None)
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--model-load-s", type=float, default=0.0)
    serve.add_argument("--lab-zone", default=None)
    serve.add_argument("--lab-group", default=None)
    return parser


def _serve(args: argparse.Namespace) -> int:
    if args.host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"--host {args.host}: real engines serve on 127.0.0.1 only")
    if args.replicas != 1:
        raise ConfigError(f"--replicas {args.replicas}: one real engine per process")
    max_replicas = int(os.environ.get("LAB_VLLM_MAX_REPLICAS", _DEFAULT_MAX_REPLICAS))
    stop_requested: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with _replica_slot(max_replicas):
        check_memory(1)
        env = check_environment()
        seed = int(os.environ.get("LAB_TINY_MODEL_SEED", "0"))
        model = build_tiny_model(spec=TinyModelSpec(seed=seed), env=env)
        name = args.served_model_name or args.model
        serve_args = VllmServeArgs(
            model=args.model,
            served_model_name=name,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len,
        )
        engine = start_engine(
            model,
            port=args.port or None,
            serve_args=serve_args,
            env=env,
            name=args.lab_group or None,
            zone=args.lab_zone,
            group=args.lab_group,
            log_dir=os.environ.get("LAB_REAL_ENGINE_LOG_DIR") or None,
            wait=False,
            die_with_parent=True,
        )
        line = {
            "event": "listening",
            "host": "127.0.0.1",
            "port": engine.port,
            "replica": 0,
            "zone": args.lab_zone,
            "group": args.lab_group,
            "model": name,
            "engine": "vllm",
            "engine_pid": engine.pid,
            "log": str(engine.log_path),
        }
        print(json.dumps(line), flush=True)
        try:
            while not stop_requested and engine.is_running():
                time.sleep(0.2)
        finally:
            code = engine.stop(timeout_s=_STOP_TIMEOUT_S)
        if stop_requested:
            print(json.dumps({"event": "stopped"}), flush=True)
            return 0
        tail = engine.log_tail(2000).strip().splitlines()
        print(
            f"labutils.realengine serve: vLLM exited with code {code}: "
            f"{tail[-1] if tail else '(empty log)'} (log: {engine.log_path})",
            file=sys.stderr,
        )
        return 1


def main(argv: list[str] | None = None) -> int:
    """Parse ``serve MODEL [flags]`` and run; a ``LabError`` prints one line, exit != 0."""
    raw = sys.argv[1:] if argv is None else argv
    # vllm serve accepts --foo_bar as well as --foo-bar.
    normalised = [
        a.split("=", 1)[0].replace("_", "-") + a[len(a.split("=", 1)[0]) :]
        if a.startswith("--")
        else a
        for a in raw
    ]
    args, unknown = _parser().parse_known_args(normalised)
    if unknown:
        print(f"labutils.realengine serve: ignoring {' '.join(unknown)}", file=sys.stderr)
    try:
        return _serve(args)
    except LabError as exc:
        print(f"labutils.realengine serve: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
