"""ASGI middleware loaded *inside* a real vLLM server: name the zone and group that answered.

Standalone (imports nothing from the lab): the launcher puts this folder on the engine's
``PYTHONPATH`` and passes ``--middleware lab_headers.add_lab_headers``; vLLM registers a
function middleware with ``@app.middleware("http")`` (vLLM's ``--middleware`` flag). Values come
from ``LAB_ZONE`` / ``LAB_GROUP`` in the engine's environment, so real engines behind the local
twin's gateway carry the same ``x-lab-zone`` / ``x-lab-group`` headers as simulated ones.
"""

from __future__ import annotations

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


async def add_lab_headers(request: Any, call_next: Any) -> Any:
    """Add the lab's headers to every response (streaming ones too: headers go first)."""
    response = await call_next(request)
    for name, value in _HEADERS.items():
        response.headers[name] = value
    return response
