"""A local HTTP server that answers every POST with JSON: the body goes to ``handle(body, headers)`` (header
names lower-cased, as HTTP compares them), which returns (status, payload). The stand-in servers of provider
tests (a judge, a DeepSeek-shaped teacher) are built on it.

    with json_post_server(lambda body, headers: (200, {"ok": True})) as root:
        httpx.post(root + "/v1/chat/completions", json={...})
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator


@contextmanager
def json_post_server(handle: Callable[[dict, dict], tuple[int, dict]]) -> Iterator[str]:
    """Serve on 127.0.0.1 (a free port) until the block ends; yields ``http://127.0.0.1:PORT``."""
    from components.common.network import free_port
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            status, payload = handle(body, {k.lower(): v for k, v in self.headers.items()})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=10)
