"""ASGI middleware loaded *inside* a real vLLM server: the lab's headers and health fault.

Standalone (imports nothing from the lab): the launcher puts this folder on the engine's
``PYTHONPATH`` and passes ``--middleware lab_headers.add_lab_headers``; vLLM registers a
function middleware with ``@app.middleware("http")`` (vLLM's ``--middleware`` flag).

- ``x-lab-zone`` / ``x-lab-group`` on every response, from ``LAB_ZONE`` / ``LAB_GROUP`` in the
  engine's environment, as simulated engines send them behind the local twin's gateway.
- ``POST /lab/fault`` ``{"mode": "ok" | "unhealthy"}`` as the simulator takes it (the twin's
  ``labctl twin fail --mode unhealthy``): while unhealthy, ``GET /health`` answers 503 and
  requests are still served. ``slow`` is refused: a real engine's speed is what it is.
"""

from __future__ import annotations

import json
import os
from typing import Any

_HEADERS = {
    name: value
    for name, value in (
        ("x-lab-zone", os.environ.get("LAB_ZONE", "")),
        ("x-lab-group", os.environ.get("LAB_GROUP", "")),
    )
    if value
}
_MODES = ("ok", "unhealthy")
_state = {"mode": "ok"}


def _json_response(body: dict[str, Any], status: int) -> Any:
    from starlette.responses import Response  # vLLM's web stack; imported where it exists

    return Response(json.dumps(body), status_code=status, media_type="application/json")


async def _fault(request: Any) -> Any:
    try:
        mode = (await request.json()).get("mode")
    except (ValueError, AttributeError):
        mode = None
    if mode not in _MODES:
        message = f"mode must be one of {', '.join(_MODES)} on a real engine, got {mode!r}"
        error = {"message": message, "type": "BadRequestError", "param": "mode", "code": 400}
        return _json_response({"error": error}, 400)
    _state["mode"] = mode
    return _json_response({"mode": mode}, 200)


async def add_lab_headers(request: Any, call_next: Any) -> Any:
    """Serve the lab's fault endpoint, fail health checks when asked, add the lab's headers."""
    path = request.url.path
    if path == "/lab/fault" and request.method == "POST":
        response = await _fault(request)
    elif path == "/health" and _state["mode"] == "unhealthy":
        response = _json_response({"detail": "unhealthy (lab fault)"}, 503)
    else:
        response = await call_next(request)
    for name, value in _HEADERS.items():
        response.headers[name] = value
    return response
