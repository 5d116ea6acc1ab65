"""The launcher's process handling, with stand-in servers (real processes on 127.0.0.1).

The stand-ins are small Python programs that behave like the failure modes of a real vLLM
start: exit with vLLM's error text, never answer, or answer /health.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from labutils.errors import EndpointError, WaitTimeout
from labutils.realengine.launcher import RealEngine, _reserve_port, free_port

_HEALTH_SERVER = """
import http.server, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _engine(tmp_path: Path, code: str, *args: str) -> RealEngine:
    port = free_port()
    return RealEngine(
        argv=[sys.executable, "-c", code, str(port), *args],
        env={"PATH": "/usr/bin:/bin"},
        port=port,
        served_model_name="tiny",
        log_path=tmp_path / "engine.log",
        name="stand-in",
    )


def test_exit_while_starting_names_cause_and_log(tmp_path: Path) -> None:
    code = (
        "import sys; print('ERROR: [Errno 98] error while attempting to bind: "
        "address already in use'); sys.exit(1)"
    )
    with _engine(tmp_path, code) as engine, pytest.raises(EndpointError) as info:
        engine.wait_ready(timeout_s=60)
    message = str(info.value)
    assert "exited with code 1" in message
    assert "port is taken" in message
    assert str(tmp_path / "engine.log") in message


def test_import_failure_is_diagnosed(tmp_path: Path) -> None:
    code = "import sys; print('ModuleNotFoundError: No module named torch'); sys.exit(1)"
    with _engine(tmp_path, code) as engine, pytest.raises(EndpointError, match="incomplete"):
        engine.wait_ready(timeout_s=60)


def test_silent_server_times_out_with_last_status(tmp_path: Path) -> None:
    with _engine(tmp_path, "import time; time.sleep(60)") as engine:
        with pytest.raises(WaitTimeout, match=r"not healthy after 1 s \(last: Client"):
            engine.wait_ready(timeout_s=1)
        assert engine.is_running()
    assert not engine.is_running()


def test_ready_server_then_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    engine = _engine(tmp_path, _HEALTH_SERVER)
    try:
        waited_s = engine.wait_ready(timeout_s=60)
        assert 0 < waited_s < 60
        assert engine.url == f"http://127.0.0.1:{engine.port}"
        children = psutil.Process(engine.pid).children(recursive=True)
        assert children, "the stand-in starts a child process"
        assert engine.rss_bytes() > psutil.Process(engine.pid).memory_info().rss
    finally:
        engine.stop(timeout_s=10)
    assert not engine.is_running()
    deadline = time.monotonic() + 10
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        assert time.monotonic() < deadline, "child of the engine survived stop()"
        time.sleep(0.1)
    assert engine.rss_bytes() == 0


def test_port_reservation_admits_the_engine_and_no_one_else(tmp_path: Path) -> None:
    reservation = _reserve_port(None)
    port = reservation.getsockname()[1]
    try:
        intruder = socket.socket()
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))  # a plain bind is refused while reserved
        intruder.close()
        engine = _engine(tmp_path, _HEALTH_SERVER)  # HTTPServer binds with SO_REUSEADDR, as vLLM
        engine.port = port
        engine.argv[3] = str(port)  # [python, -c, code, PORT]
        engine.port_reservation = reservation
        with engine:
            assert engine.wait_ready(timeout_s=60) > 0
        assert engine.port_reservation is None  # released by stop()
    finally:
        reservation.close()
