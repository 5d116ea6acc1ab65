"""Free TCP ports on 127.0.0.1 (the twin never assumes fixed ports)."""

from __future__ import annotations

import socket

import psutil

__all__ = ["free_ports", "listening_ports"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel reports free right now (bind to port 0)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def listening_ports(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state owned by any of ``pids``."""
    ports = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr:
            ports.add(conn.laddr.port)
    return ports
