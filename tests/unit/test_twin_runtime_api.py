"""HAProxy's runtime API client when HAProxy dies mid-answer (the lb-restart drill kills it)."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from labutils.errors import TwinError
from labutils.targets.twin.haproxy import runtime_command


def _serve_once(path: Path, answer: bytes | None) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def handle() -> None:
        conn, _ = server.accept()
        if answer is None:
            # close with the command still unread: the kernel resets the client's connection,
            # as a SIGKILLed HAProxy worker does to an open stats-socket exchange
            threading.Event().wait(0.2)
            conn.close()
            return
        conn.recv(1024)
        conn.sendall(answer)
        conn.close()

    threading.Thread(target=handle, daemon=True).start()
    return server


def test_an_answer_cut_off_is_a_twin_error_not_a_bare_reset(tmp_path: Path) -> None:
    server = _serve_once(tmp_path / "cut.sock", None)
    try:
        with pytest.raises(TwinError, match=r"'show stat' cut off .*is it restarting"):
            asyncio.run(runtime_command(tmp_path / "cut.sock", "show stat", timeout_s=2.0))
    finally:
        server.close()


def test_answers_and_refusals_of_a_live_socket(tmp_path: Path) -> None:
    server = _serve_once(tmp_path / "ok.sock", b"# pxname,svname\nzone_a,g0\n")
    try:
        answer = asyncio.run(runtime_command(tmp_path / "ok.sock", "show stat", timeout_s=2.0))
        assert answer.splitlines()[1] == "zone_a,g0"
    finally:
        server.close()
    server = _serve_once(tmp_path / "no.sock", b"Unknown command: 'show stats'\n")
    try:
        with pytest.raises(TwinError, match="HAProxy refused 'show stats'"):
            asyncio.run(runtime_command(tmp_path / "no.sock", "show stats", timeout_s=2.0))
    finally:
        server.close()
    with pytest.raises(TwinError, match="is the twin up"):
        asyncio.run(runtime_command(tmp_path / "missing.sock", "show stat", timeout_s=1.0))
