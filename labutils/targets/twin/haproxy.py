"""HAProxy as the twin's NLB + Gateway: configuration from the spec, and its runtime API.

Layout (HAProxy 2.6 configuration manual and management guide, docs.haproxy.org/2.6,
checked on Debian 12's haproxy 2.6):

- frontend ``gateway``: applies the HTTPRoute's ``RequestHeaderModifier``, draws
  ``rand(sum of weights)`` and picks a per-zone backend by weight range, so zone weights do not
  depend on group counts; weight-0 zones get no range. Strategy ``weighted`` falls back to the
  ``fallback`` backend (every server of the weighted zones) when the drawn zone has no server
  up (``nbsrv``); ``weighted-strict`` does not (the dead zone's share gets 503, as the Gateway
  API's split does); ``least-request`` and ``queue-aware`` send everything to ``pool``
  (``leastconn`` over all weighted zones' servers); for ``queue-aware`` the controller sets
  each server's weight at run time from the engine's queue and KV-cache usage.
- one frontend per zone (``zone_urls``), a stats frontend with the Prometheus exporter.
- servers are *slots* named like the LWS groups (``<lws>-<g>``); an absent group is a
  ``disabled`` slot, so scaling only changes address and state through the runtime API.
- ``option http-no-delay`` (SSE arrives as written), ``retry-on conn-failure`` +
  ``option redispatch`` (never re-sends a request a server received).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from labutils.errors import TwinError
from labutils.targets.twin.spec import HeaderModifier, HealthCheck, TwinSpec, ZoneSpec

__all__ = [
    "HAPROXY_INSTALL",
    "STRATEGIES",
    "HaproxyLayout",
    "ServerStat",
    "Slot",
    "backend_names",
    "haproxy_binary",
    "render_haproxy_config",
    "runtime_command",
    "server_backends",
    "server_stats",
    "success_codes_regex",
]

STRATEGIES = ("weighted", "weighted-strict", "least-request", "queue-aware")
_INITIAL_WEIGHT = 100  # room for queue-aware weights (HAProxy allows 0..256)


@dataclass(frozen=True)
class Slot:
    """One server slot: an LWS group's leader, enabled when its engine is ready."""

    zone: str
    group: str
    port: int | None  # None: no engine yet (slot disabled)


@dataclass(frozen=True)
class HaproxyLayout:
    """Where HAProxy listens and keeps its files."""

    gateway_port: int
    zone_ports: Mapping[str, int]
    stats_port: int
    socket_path: Path
    map_path: Path


# Debian installs daemons in /usr/sbin, which is not on an ordinary user's PATH.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
HAPROXY_INSTALL = "sudo apt-get install -y haproxy (or run 'make setup')"


def haproxy_binary() -> str:
    """Path of the ``haproxy`` executable: ``$LAB_HAPROXY``, else PATH and the sbin folders.

    Raises:
        TwinError: not found; one line naming HAProxy and the command that installs it.
    """
    override = os.environ.get("LAB_HAPROXY")
    if override:
        if shutil.which(override):
            return override
        raise TwinError(
            f"haproxy not found at LAB_HAPROXY={override}; the twin's gateway needs HAProxy: "
            f"install it with {HAPROXY_INSTALL} or unset LAB_HAPROXY"
        )
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    path = shutil.which("haproxy", path=search)
    if not path:
        raise TwinError(
            f"haproxy not found on PATH; the twin's gateway needs HAProxy: install it with "
            f"{HAPROXY_INSTALL}"
        )
    return path


def backend_names(spec: TwinSpec) -> dict[str, str]:
    """Zone -> its HAProxy backend name."""
    return {z.zone: f"zone_{z.zone}" for z in spec.zones}


def success_codes_regex(codes: str) -> str:
    """NLB ``success-codes`` (``200-399``, ``200,202``) as a regex for ``http-check expect``."""
    alternatives: list[str] = []
    for part in codes.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            code = lo
            while code <= hi:
                if code % 100 == 0 and code + 99 <= hi:  # a whole hundred: one pattern
                    alternatives.append(f"{code // 100}[0-9][0-9]")
                    code += 100
                else:
                    alternatives.append(str(code))
                    code += 1
        elif part:
            alternatives.append(str(int(part)))
    if not alternatives:
        raise TwinError(f"health-check success codes {codes!r}: expected e.g. 200-399 or 200,202")
    return "^(" + "|".join(alternatives) + ")$"


def _escape(value: str) -> str:
    # HAProxy log-format strings: escape quotes/backslashes and a literal '%'.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def _quote(value: str) -> str:
    return f'"{_escape(value)}"'


def _header_rules(mods: HeaderModifier, direction: str = "request") -> list[str]:
    # Gateway API Request/ResponseHeaderModifier: set overwrites, add appends comma-joined,
    # remove deletes; HAProxy header names are case-insensitive like the spec's. (`add-header`
    # would add a second header line, hence set-header with the joined value.)
    lines = []
    rule = f"http-{direction}"
    fetch = "req" if direction == "request" else "res"
    for name, value in mods.set:
        lines.append(f"    {rule} set-header {name} {_quote(value)}")
    for name, value in mods.add:
        joined = f'"%[{fetch}.fhdr({name})],{_escape(value)}"'
        found = f"{{ {fetch}.hdr({name}) -m found }}"
        lines.append(f"    {rule} set-header {name} {joined} if {found}")
        lines.append(f"    {rule} set-header {name} {_quote(value)} if !{found}")
    for name in mods.remove:
        lines.append(f"    {rule} del-header {name}")
    return lines


def _frontend_rules(spec: TwinSpec) -> list[str]:
    lines = []
    if spec.path_prefixes:
        acl = " ".join(spec.path_prefixes)
        lines.append(f"    http-request return status 404 if !{{ path_beg {acl} }}")
    return lines + _header_rules(spec.headers) + _header_rules(spec.response_headers, "response")


def _zone_rules(zone: ZoneSpec) -> list[str]:
    return _header_rules(zone.request_headers) + _header_rules(zone.response_headers, "response")


def _check_lines(health: HealthCheck, time_scale: float) -> list[str]:
    inter_ms = max(100, int(health.interval_s * 1000 * time_scale))
    timeout_ms = max(100, int(min(health.timeout_s, health.interval_s) * 1000 * time_scale))
    lines = [
        f"    timeout check {timeout_ms}ms",
        f"    default-server inter {inter_ms}ms fall {health.unhealthy_threshold} "
        f"rise {health.healthy_threshold} weight {_INITIAL_WEIGHT}",
    ]
    if health.protocol in ("HTTP", "HTTPS"):
        lines += [
            f"    option httpchk GET {health.path}",
            f"    http-check expect rstatus {success_codes_regex(health.success_codes)}",
        ]
    return lines


def _timeout_ms(spec: TwinSpec) -> int:
    return int((spec.request_timeout_s or 3600.0) * 1000)


def _server_line(slot: Slot) -> str:
    if slot.port is None:
        return f"    server {slot.group} 127.0.0.1:1 check disabled"
    return f"    server {slot.group} 127.0.0.1:{slot.port} check"


def render_haproxy_config(
    spec: TwinSpec,
    layout: HaproxyLayout,
    slots: Sequence[Slot],
    *,
    strategy: str = "weighted",
    time_scale: float = 1.0,
    generation: int = 0,
) -> str:
    """The full ``haproxy.cfg`` for ``spec`` with the given server slots.

    Args:
        spec: the twin spec (zones, weights, health checks, header filter).
        layout: ports and file paths.
        slots: every server slot of every zone (enabled ones have a port).
        strategy: one of :data:`STRATEGIES`.
        time_scale: multiplies health-check intervals (tests use < 1 to run faster).
        generation: served at ``/lab/config-generation`` on the stats port, so a reload can
            wait until the new worker (and its listeners) took over.

    Raises:
        TwinError: unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise TwinError(f"routing strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    backends = backend_names(spec)
    balance = "roundrobin" if strategy.startswith("weighted") else "leastconn"
    out = [
        "# generated by labutils.targets.twin from the rendered manifests; edit those, not this",
        "global",
        f"    stats socket {layout.socket_path} mode 600 level admin",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    option http-no-delay",
        "    timeout connect 2s",
        # HTTPRoute timeouts.request bounds the whole exchange (no limit: 1 h, bounded anyway)
        f"    timeout client {_timeout_ms(spec)}ms",
        f"    timeout server {_timeout_ms(spec)}ms",
        "    timeout queue 30s",
        "    timeout http-request 30s",
        "    retries 3",
        "    option redispatch",
        "    retry-on conn-failure",
        "",
        "frontend stats",
        f"    bind 127.0.0.1:{layout.stats_port}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        f'    http-request return status 200 content-type text/plain string "{generation}"'
        " if { path /lab/config-generation }",
        "    stats enable",
        "    stats uri /stats",
        "",
        "frontend gateway",
        f"    bind 127.0.0.1:{layout.gateway_port}",
        *_frontend_rules(spec),
    ]
    weighted = [z for z in spec.zones if z.weight > 0]
    if strategy.startswith("weighted"):
        total = sum(z.weight for z in weighted)
        if total:
            out.append(f"    http-request set-var(txn.lab_draw) rand({total})")
        low = 0
        for z in weighted:
            high = low + z.weight - 1
            acl = f"lab_pick_{z.zone}"
            out.append(f"    acl {acl} var(txn.lab_draw) -m int {low}:{high}")
            be = backends[z.zone]
            if strategy == "weighted":
                out.append(f"    use_backend {be} if {acl} {{ nbsrv({be}) gt 0 }}")
            else:
                out.append(f"    use_backend {be} if {acl}")
            low = high + 1
        out.append(f"    default_backend {'fallback' if strategy == 'weighted' else 'unavailable'}")
    else:
        out.append("    default_backend pool")
    out.append("")
    for z in spec.zones:
        out += [
            f"frontend zone_{z.zone}",
            f"    bind 127.0.0.1:{layout.zone_ports[z.zone]}",
            *_frontend_rules(spec),
            f"    default_backend {backends[z.zone]}",
            "",
        ]
    zone_of = {s.group: s.zone for s in slots}
    by_zone: dict[str, list[Slot]] = {}
    for slot in slots:
        by_zone.setdefault(slot.zone, []).append(slot)
    for z in spec.zones:
        out += [
            f"backend {backends[z.zone]}",
            f"    balance {balance}",
            *_check_lines(z.health, time_scale),
            *_zone_rules(z),
            "    http-response set-header x-lab-group %[srv_name]",
            f"    http-response set-header x-lab-zone {z.zone}",
            *(_server_line(s) for s in by_zone.get(z.zone, [])),
            "",
        ]
    pooled = _pooled_backend(strategy)
    if pooled:
        health = weighted[0].health if weighted else HealthCheck()
        out += [
            f"backend {pooled}",
            f"    balance {balance}",
            *_check_lines(health, time_scale),
            "    http-response set-header x-lab-group %[srv_name]",
            f"    http-response set-header x-lab-zone %[srv_name,map({layout.map_path},unknown)]",
        ]
        for z in weighted:
            out += [_server_line(s) for s in by_zone.get(z.zone, [])]
        out.append("")
    if strategy == "weighted-strict":
        out += ["backend unavailable", ""]
    layout.map_path.write_text("".join(f"{g} {zone}\n" for g, zone in zone_of.items()))
    return "\n".join(out) + "\n"


def _pooled_backend(strategy: str) -> str | None:
    if strategy == "weighted":
        return "fallback"
    if strategy in ("least-request", "queue-aware"):
        return "pool"
    return None


async def runtime_command(socket_path: Path, command: str, timeout_s: float = 5.0) -> str:
    """Send one command to HAProxy's runtime API (stats socket) and return its answer.

    Raises:
        TwinError: the socket is missing, the answer was cut off (HAProxy killed or
            restarting mid-answer) or the command was refused.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise TwinError(f"HAProxy runtime API {socket_path}: {exc}; is the twin up?") from None
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        answer = (await asyncio.wait_for(reader.read(), timeout_s)).decode()
    except (OSError, TimeoutError) as exc:  # HAProxy died or restarted mid-answer
        raise TwinError(
            f"HAProxy runtime API {socket_path}: {command!r} cut off ({exc!r}); is it restarting?"
        ) from None
    finally:
        writer.close()
    lowered = answer.lower()
    if "unknown command" in lowered or "no such" in lowered or "require" in lowered:
        raise TwinError(f"HAProxy refused {command!r}: {answer.strip()}")
    return answer


@dataclass(frozen=True)
class ServerStat:
    """One server row of ``show stat``: the backend, the server (a group), its status, sessions."""

    backend: str
    server: str
    status: str  # UP, DOWN, MAINT, DRAIN, "UP 1/2" (going down), "DOWN 1/2" (going up), ...
    sessions: int  # scur: connections open right now


def server_stats(show_stat: str) -> list[ServerStat]:
    """The server rows of a ``show stat`` answer (CSV; field 4 ``scur``, field 17 ``status``).

    Header, FRONTEND and BACKEND rows are left out.
    """
    rows = []
    for line in show_stat.splitlines():
        cols = line.split(",")
        if len(cols) < 18 or line.startswith("#") or cols[1] in ("FRONTEND", "BACKEND"):
            continue
        rows.append(ServerStat(cols[0], cols[1], cols[17], int(cols[4] or 0)))
    return rows


def server_backends(spec: TwinSpec, zone: str, strategy: str) -> list[str]:
    """Every backend holding the servers of ``zone`` under ``strategy``."""
    names = [backend_names(spec)[zone]]
    pooled = _pooled_backend(strategy)
    if pooled and spec.zone(zone).weight > 0:
        names.append(pooled)
    return names
