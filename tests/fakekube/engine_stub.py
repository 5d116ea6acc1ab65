"""A stand-in for a vLLM leader pod behind the fake API server's proxy (127.0.0.1, free port).

It serves a recorded real ``/metrics`` scrape, ``/v1/models`` and a one-token
``POST /v1/chat/completions`` (the response shape of vLLM's OpenAI server), like the pod would;
the fake API server forwards ``.../pods/<leader>:8000/proxy/<path>`` here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["engine_stub"]


@contextmanager
def engine_stub(metrics_file: Path, model: str = "llama-3.1-8b") -> Iterator[str]:
    """Serve ``/metrics`` (the file's text) and ``/v1/models``; yield the base URL."""
    metrics = metrics_file.read_bytes()
    models = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, ctype, code = metrics, "text/plain; version=0.0.4", 200
            elif path == "/v1/models":
                body, ctype, code = models, "application/json", 200
            else:
                body, ctype, code = b"not found", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            if self.path.split("?")[0] != "/v1/chat/completions":
                body, code = b"not found", 404
            else:
                answer = {
                    "id": "chatcmpl-stub", "object": "chat.completion", "model": request.get(
                        "model", model), "choices": [{"index": 0, "finish_reason": "length",
                        "message": {"role": "assistant", "content": "Hello"}}],
                    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
                }  # fmt: skip
                body, code = json.dumps(answer).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if code == 200 else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
