"""Async streaming sender: every scheduled request gets exactly one recorded outcome.

Open loop: one dispatcher sleeps until each request's offset and starts it as a task, never
waiting for answers; when it falls behind it sends at once and the lag (scheduled -> sent)
shows it (no coordinated omission hidden). Closed loop: ``concurrency`` workers send one
request after another. Responses are read as Server-Sent Events; every chunk's arrival time is
kept, token counts come from the final ``usage`` chunk (``stream_options.include_usage``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import math
import multiprocessing
import resource
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from queue import Empty
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pandas as pd

from labutils._aio import run_sync
from labutils._progress import progress_bar
from labutils.errors import LoadTestError, WaitTimeout
from labutils.loadtest.schedule import Schedule

__all__ = [
    "OUTCOMES",
    "LoadTestResult",
    "RequestRecord",
    "run_load",
    "run_load_async",
]

# Every request ends in exactly one of these.
OUTCOMES: tuple[str, ...] = (
    "ok",
    "http_4xx",
    "http_5xx",
    "timeout",
    "connection_refused",
    "connection_reset",
    "stream_error",  # 200 but the stream carried an error or ended without [DONE]
    "client_error",  # anything else the client raised
)

T = TypeVar("T")

_ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass
class RequestRecord:
    """What happened to one scheduled request; times are seconds from the run's start."""

    index: int
    scheduled_s: float
    sent_s: float = math.nan
    first_token_s: float = math.nan
    end_s: float = math.nan
    chunk_times_s: list[float] = field(default_factory=list)  # content chunks only
    outcome: str = "client_error"
    status: int | None = None
    error: str = ""
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    zone: str = ""
    group: str = ""
    endpoint: str = ""


@dataclass
class LoadTestResult:
    """Every request's record plus the schedule and run facts a summary needs."""

    schedule: Schedule
    records: list[RequestRecord]
    url: str
    model: str
    stream: bool
    started_at: float  # wall clock (time.time()) at offset 0
    wall_s: float  # from offset 0 to the last outcome
    max_in_flight: int = 0  # the open loop's cap on outstanding requests (0: none)
    cap_waits: int = 0  # times the sender had to wait for the cap before its next send
    t0_perf_s: float = math.nan  # time.perf_counter() at offset 0 (aligns other clocks)

    def to_frame(self) -> pd.DataFrame:
        """One row per request with latencies derived (NaN where the request failed).

        Columns: index, scheduled_s, sent_s, send_lag_s, ttft_s, e2e_s, tpot_s, itl_mean_s,
        chunks, outcome, status, error, prompt_tokens, output_tokens, zone, group, endpoint.
        """
        rows = []
        for r in self.records:
            ok = r.outcome == "ok"
            ttft = r.first_token_s - r.sent_s if ok else math.nan
            e2e = r.end_s - r.sent_s if ok else math.nan
            out = r.output_tokens
            tpot = (e2e - ttft) / (out - 1) if ok and out is not None and out > 1 else math.nan
            gaps = np.diff(r.chunk_times_s) if len(r.chunk_times_s) > 1 else np.zeros(0)
            rows.append(
                {
                    "index": r.index,
                    "e2e_from_scheduled_s": r.end_s - r.scheduled_s if ok else math.nan,
                    "scheduled_s": r.scheduled_s,
                    "sent_s": r.sent_s,
                    "send_lag_s": r.sent_s - r.scheduled_s,
                    "ttft_s": ttft,
                    "e2e_s": e2e,
                    "tpot_s": tpot,
                    "itl_mean_s": float(gaps.mean()) if ok and gaps.size else math.nan,
                    "chunks": len(r.chunk_times_s),
                    "outcome": r.outcome,
                    "status": r.status,
                    "error": r.error,
                    "prompt_tokens": r.prompt_tokens,
                    "output_tokens": r.output_tokens,
                    "zone": r.zone,
                    "group": r.group,
                    "endpoint": r.endpoint,
                }
            )
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame["status"] = frame["status"].astype("Int64")
        frame["prompt_tokens"] = frame["prompt_tokens"].astype("Int64")
        frame["output_tokens"] = frame["output_tokens"].astype("Int64")
        return frame

    def itls_s(self) -> np.ndarray:
        """Every gap between consecutive content chunks, pooled over successful requests."""
        gaps = [
            np.diff(r.chunk_times_s)
            for r in self.records
            if r.outcome == "ok" and len(r.chunk_times_s) > 1
        ]
        return np.concatenate(gaps) if gaps else np.zeros(0)


# Default cap on outstanding open-loop requests (each holds a socket).
_DEFAULT_MAX_IN_FLIGHT = 4096
_SPARE_FDS = 256


def _in_flight_limit(requested: int) -> int:
    """The open loop's in-flight cap, within this process's open-file limit.

    Raises the soft RLIMIT_NOFILE to the hard one when needed (as load tools usually do).
    """
    want = requested or _DEFAULT_MAX_IN_FLIGHT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want + _SPARE_FDS:
        target = want + _SPARE_FDS
        if hard != resource.RLIM_INFINITY:
            target = min(target, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        want = min(want, max(1, soft - _SPARE_FDS))
    return want


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map a client exception to (outcome, one-line error)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout", text
    if isinstance(exc, aiohttp.ClientConnectorError):
        refused = exc.os_error.errno == errno.ECONNREFUSED or isinstance(
            exc.os_error, ConnectionRefusedError
        )
        return ("connection_refused" if refused else "client_error"), text
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | ConnectionResetError
        | BrokenPipeError,
    ):
        return "connection_reset", text
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connection_reset", text
    return "client_error", text


class _Sender:
    """Holds the run's session, clock and records; one per run."""

    def __init__(
        self,
        schedule: Schedule,
        url: str | Sequence[str],
        model: str,
        *,
        endpoint: str,
        stream: bool,
        timeout_s: float,
        headers: Mapping[str, str] | None,
        max_connections: int,
        ignore_eos: bool,
        progress: bool,
        max_in_flight: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if endpoint not in _ENDPOINTS:
            raise LoadTestError(f"endpoint={endpoint!r}: choose one of {', '.join(_ENDPOINTS)}")
        if not timeout_s > 0:
            raise LoadTestError(f"timeout_s={timeout_s}: give a positive per-request timeout")
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise LoadTestError("no URL to send to: give a base URL such as http://127.0.0.1:8000")
        self.schedule = schedule
        # Several URLs (e.g. one per zone) share the requests round-robin by index.
        self.base_urls = [u.rstrip("/") for u in urls]
        self.post_urls = [u + _ENDPOINTS[endpoint] for u in self.base_urls]
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.max_connections = max_connections
        self.ignore_eos = ignore_eos
        self.records: list[RequestRecord] = []
        self.t0 = 0.0
        self.max_in_flight = _in_flight_limit(max_in_flight)
        self.cap_waits = 0
        # Open loop split over processes: this sender sends indices shard[0], +shard[1], ...
        self.shard = shard
        # Blocks until every shard is ready; returns the common start (a perf_counter value:
        # CLOCK_MONOTONIC on Linux, the same clock in every process of the machine).
        self.start_gate: Callable[[], float] | None = None
        self.bar = progress_bar(
            total=schedule.num_requests,
            disable=not progress,
            desc=f"loadtest {schedule.label()}",
            unit="req",
            leave=False,
        )

    def _bodies(self, start: int, count: int) -> list[bytes]:
        """Request bodies, built before the clock starts so sending costs no JSON encoding."""
        return [self._body(p) for p in self.schedule.prompts(start, count)]

    def _body(self, prompt: str) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.schedule.output_tokens,
            "stream": self.stream,
            # ignore_eos is a vLLM extension: with it every answer has exactly max_tokens.
            "ignore_eos": self.ignore_eos,
            "temperature": 0.0,
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

    async def send(
        self, session: aiohttp.ClientSession, record: RequestRecord, body: bytes
    ) -> None:
        now = time.perf_counter
        slot = record.index % len(self.post_urls)
        record.endpoint = self.base_urls[slot]
        record.sent_s = now() - self.t0
        try:
            async with session.post(self.post_urls[slot], data=body, timeout=self.timeout) as resp:
                record.status = resp.status
                record.zone = resp.headers.get("x-lab-zone", "")
                record.group = resp.headers.get("x-lab-group", "")
                if resp.status >= 400:
                    detail = (await resp.read())[:200].decode(errors="replace")
                    record.end_s = now() - self.t0
                    record.outcome = "http_4xx" if resp.status < 500 else "http_5xx"
                    record.error = f"HTTP {resp.status}: {' '.join(detail.split())}"
                    return
                if self.stream:
                    await self._read_stream(resp, record)
                else:
                    payload = await resp.read()
                    record.end_s = record.first_token_s = now() - self.t0
                    record.chunk_times_s.append(record.end_s)
                    self._take_usage(json.loads(payload), record)
                    record.outcome = "ok"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            record.end_s = now() - self.t0
            record.outcome, record.error = _classify(exc)
            if record.outcome == "timeout":
                record.error = f"TimeoutError: no complete answer within {self.timeout.total:g} s"
        except Exception as exc:  # every request must end with an outcome, whatever broke
            record.end_s = now() - self.t0
            record.outcome = "client_error"
            record.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        finally:
            self.bar.update(1)

    async def _read_stream(self, resp: aiohttp.ClientResponse, record: RequestRecord) -> None:
        now, t0 = time.perf_counter, self.t0
        chunk_times = record.chunk_times_s
        buffer = b""
        done = False
        # Reading whatever arrived (not line by line) keeps per-request cost low; events that
        # arrive in the same read share one timestamp, as they did on the wire.
        async for data in resp.content.iter_any():
            arrived_s = now() - t0
            buffer += data
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            complete, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            if b'"error"' in complete or b'": ' in complete:
                content, usage, done_here, error = _scan_events(complete)
            else:
                content, usage, done_here, error = _count_compact(complete)
            if error is not None:
                record.end_s = arrived_s
                record.outcome, record.error = "stream_error", error
                return
            if usage is not None:
                self._take_usage(usage, record)
            if content:
                if not chunk_times:
                    record.first_token_s = arrived_s
                chunk_times.extend([arrived_s] * content)
            done = done or done_here
        record.end_s = now() - t0
        if not done:
            record.outcome, record.error = "stream_error", "stream ended without data: [DONE]"
        elif not chunk_times:
            record.outcome, record.error = "stream_error", "stream carried no content"
        else:
            record.outcome = "ok"

    @staticmethod
    def _take_usage(parsed: dict[str, Any], record: RequestRecord) -> None:
        usage = parsed.get("usage") or {}
        if "prompt_tokens" in usage:
            record.prompt_tokens = int(usage["prompt_tokens"])
        if "completion_tokens" in usage:
            record.output_tokens = int(usage["completion_tokens"])

    async def run(self, duration_s: float | None) -> float:
        connector = aiohttp.TCPConnector(limit=self.max_connections, force_close=False)
        try:
            async with aiohttp.ClientSession(
                connector=connector, headers=self.headers, auto_decompress=False
            ) as session:
                if self.schedule.is_open_loop:
                    await self._open_loop(session)
                else:
                    self.t0 = time.perf_counter()
                    await self._closed_loop(session, duration_s)
                return time.perf_counter() - self.t0
        finally:
            self.bar.close()

    async def _open_loop(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        offsets = self.schedule.offsets_s.tolist()
        first, step = self.shard
        indices = range(first, len(offsets), step)
        self.records = [RequestRecord(index=i, scheduled_s=offsets[i]) for i in indices]
        all_bodies = self._bodies(0, len(offsets))
        bodies = [all_bodies[i] for i in indices]
        # The clock starts after all the preparation above.
        start = self.start_gate() if self.start_gate else time.perf_counter()
        self.t0 = start
        clock = time.perf_counter
        # The cap keeps a client that fell behind from opening thousands of sockets (and then
        # timing out its own reads): waiting here shows up as send lag, where it belongs.
        cap = self.max_in_flight
        for record, body in zip(self.records, bodies, strict=True):
            delay = start + record.scheduled_s - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Behind schedule: still let answers be read first, so their connections go
                # back to the pool; launching a burst would open new sockets and fall further
                # behind (measured: 2-3x the achieved rate past the limit).
                await asyncio.sleep(0)
            if len(tasks) >= cap:
                self.cap_waits += 1
                while len(tasks) >= cap:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            task = loop.create_task(self.send(session, record, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _closed_loop(self, session: aiohttp.ClientSession, duration_s: float | None) -> None:
        limit = self.schedule.requests
        next_index = 0

        async def user() -> None:
            nonlocal next_index
            while limit is None or next_index < limit:
                elapsed = time.perf_counter() - self.t0
                if duration_s is not None and elapsed >= duration_s:
                    return
                record = RequestRecord(index=next_index, scheduled_s=elapsed)
                body = self._bodies(next_index, 1)[0]
                next_index += 1
                self.records.append(record)
                await self.send(session, record, body)

        assert self.schedule.concurrency is not None
        await asyncio.gather(*(user() for _ in range(self.schedule.concurrency)))
        self.records.sort(key=lambda r: r.index)


_ScanResult = tuple[int, dict[str, Any] | None, bool, str | None]


def _count_compact(events: bytes) -> _ScanResult:
    """Fast path for complete SSE events in compact JSON (how vLLM writes them).

    Counts content chunks with C-level ``bytes.count`` instead of parsing every chunk:
    a chunk carries text when its ``"text"`` (completions) or ``"content"`` (chat) is a
    non-empty string. Only the ``usage`` chunk is parsed.
    """
    content = (
        events.count(b'"text":"')
        - events.count(b'"text":""')
        + events.count(b'"content":"')
        - events.count(b'"content":""')
    )
    usage = None
    at = events.find(b'"usage":{')
    if at >= 0:
        begin = events.rfind(b"data:", 0, at) + 5
        finish = events.find(b"\n\n", at)
        usage = json.loads(events[begin : finish if finish >= 0 else len(events)])
    return content, usage, b"data: [DONE]" in events, None


def _scan_events(events: bytes) -> _ScanResult:
    """Slow path: parse every event (non-compact JSON, or an error in the stream)."""
    content, usage, done = 0, None, False
    for event in events.split(b"\n\n"):
        if not event.startswith(b"data:"):
            continue
        payload = event[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        parsed = json.loads(payload)
        if "error" in parsed:
            return content, usage, done, str(parsed["error"])[:200]
        if parsed.get("usage"):
            usage = parsed
        content += _parsed_has_content(parsed)
    return content, usage, done, None


def _parsed_has_content(parsed: dict[str, Any]) -> bool:
    choices = parsed.get("choices") or []
    if not choices:
        return False
    choice = choices[0]
    return bool(choice.get("text") or (choice.get("delta") or {}).get("content"))


async def run_load_async(
    schedule: Schedule,
    url: str | Sequence[str],
    model: str,
    *,
    endpoint: str = "completions",
    stream: bool = True,
    timeout_s: float = 60.0,
    headers: Mapping[str, str] | None = None,
    max_connections: int = 0,
    ignore_eos: bool = True,
    progress: bool = True,
    max_in_flight: int = 0,
) -> LoadTestResult:
    """Run ``schedule`` against an OpenAI-compatible server at ``url`` and record everything.

    Args:
        schedule: from :func:`~labutils.loadtest.schedule.open_loop` or ``closed_loop``.
        url: base URL (``http://127.0.0.1:8000``), or several that share the requests
            round-robin; ``/v1/completions`` or ``/v1/chat/completions`` is appended.
        model: the served model name.
        endpoint: ``completions`` or ``chat``.
        stream: stream the answer (needed for TTFT and ITL).
        timeout_s: per-request limit; a request past it is recorded as ``timeout``.
        headers: extra headers (e.g. ``Authorization`` read from the environment).
        max_connections: connection-pool size (0 = unlimited, so the pool never delays sends).
        ignore_eos: ask the server to generate exactly ``max_tokens`` (vLLM extension).
        progress: show a tqdm progress bar.
        max_in_flight: open loop: at most this many outstanding requests (0 = 4096, within
            the open-file limit); a request over the cap waits, and its wait counts as send lag.
    """
    sender = _Sender(
        schedule,
        url,
        model,
        endpoint=endpoint,
        stream=stream,
        timeout_s=timeout_s,
        headers=headers,
        max_connections=max_connections,
        ignore_eos=ignore_eos,
        progress=progress,
        max_in_flight=max_in_flight,
    )
    started_at = time.time()
    wall_s = await sender.run(schedule.duration_s)
    return LoadTestResult(
        schedule=schedule,
        records=sender.records,
        url=url if isinstance(url, str) else ",".join(url),
        model=model,
        stream=stream,
        started_at=started_at,
        wall_s=wall_s,
        max_in_flight=sender.max_in_flight if schedule.is_open_loop else 0,
        cap_waits=sender.cap_waits,
        t0_perf_s=sender.t0,
    )


def run_load(
    schedule: Schedule,
    url: str | Sequence[str],
    model: str,
    *,
    workers: int = 1,
    **options: Any,
) -> LoadTestResult:
    """Synchronous :func:`run_load_async` (works in scripts and inside Jupyter).

    Runs on uvloop when it is installed (a faster event loop: a higher sustained send rate),
    otherwise through :func:`labutils._aio.run_sync`.

    Args:
        workers: split an open-loop schedule over this many processes (request ``i`` goes to
            process ``i % workers``, all on one start time) when one event loop cannot keep
            up; each process pays its own start-up (~1 s). Scripts using it need the usual
            ``if __name__ == "__main__":`` guard (processes are spawned).
        **options: as for :func:`run_load_async` (``progress`` is off with several workers).
    """
    if workers > 1:
        return _run_sharded(schedule, url, model, workers, options)
    return _run_fast(run_load_async(schedule, url, model, **options))


def _shard_main(
    shard: tuple[int, int],
    sender_options: dict[str, Any],
    ready: Any,
    go: Any,
    start: Any,
    results: Any,
) -> None:
    """Entry point of one worker process of :func:`_run_sharded`."""
    sender = _Sender(**sender_options, progress=False, shard=shard)

    def gate() -> float:
        ready.put(shard[0])
        if not go.wait(timeout=300):
            raise LoadTestError(f"load worker {shard[0]}: no start signal within 300 s")
        return float(start.value)

    sender.start_gate = gate
    _run_fast(sender.run(None))
    results.put((shard[0], sender.records, sender.cap_waits, sender.max_in_flight))


def _run_sharded(
    schedule: Schedule,
    url: str | Sequence[str],
    model: str,
    workers: int,
    options: dict[str, Any],
) -> LoadTestResult:
    if not schedule.is_open_loop:
        raise LoadTestError("workers > 1 splits open-loop schedules only; use one worker here")
    options = {k: v for k, v in options.items() if k != "progress"}
    urls = [url] if isinstance(url, str) else list(url)
    sender_options = {"schedule": schedule, "url": urls, "model": model, **_defaults(options)}
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, start = ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_shard_main,
            args=((i, workers), sender_options, ready, go, start, results),
            name=f"labutils-load-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        _collect(ready, procs, workers, 120.0, "start")
        started_at = time.time()
        start.value = time.perf_counter() + 0.05
        go.set()
        last_offset = float(schedule.offsets_s[-1]) if len(schedule.offsets_s) else 0.0
        limit_s = last_offset + float(sender_options["timeout_s"]) + 120.0
        parts = _collect(results, procs, workers, limit_s, "finish")
        wall_s = time.perf_counter() - start.value
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    records = sorted((r for _, part, _, _ in parts for r in part), key=lambda r: r.index)
    return LoadTestResult(
        schedule=schedule,
        records=records,
        url=",".join(urls),
        model=model,
        stream=bool(sender_options["stream"]),
        started_at=started_at,
        wall_s=wall_s,
        max_in_flight=sum(int(p[3]) for p in parts),
        cap_waits=sum(int(p[2]) for p in parts),
    )


def _defaults(options: dict[str, Any]) -> dict[str, Any]:
    known = {
        "endpoint": "completions",
        "stream": True,
        "timeout_s": 60.0,
        "headers": None,
        "max_connections": 0,
        "ignore_eos": True,
        "max_in_flight": 0,
    }
    unknown = set(options) - set(known)
    if unknown:
        raise LoadTestError(f"run_load: unknown option(s) {sorted(unknown)}; use {sorted(known)}")
    return {**known, **options}


def _collect(queue: Any, procs: list[Any], count: int, limit_s: float, what: str) -> list[Any]:
    """Take ``count`` items from ``queue``, failing fast when a worker process died."""
    items: list[Any] = []
    deadline = time.monotonic() + limit_s
    while len(items) < count:
        try:
            items.append(queue.get(timeout=0.5))
            continue
        except Empty:
            pass
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead:
            raise LoadTestError(
                f"load worker {dead[0].name} exited with {dead[0].exitcode} before it could "
                f"{what}; run with workers=1 to see its error"
            )
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"load workers did not {what} within {limit_s:.0f} s ({len(items)} of {count} did)"
            )
    return items


def _run_fast(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return run_sync(coro)

    def run_here() -> T:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_here()
    # Inside Jupyter's loop: run on a fresh loop in a worker thread (as run_sync does).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labutils-load") as pool:
        return pool.submit(run_here).result()
