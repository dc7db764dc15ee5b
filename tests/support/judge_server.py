"""A local chat-completions server for the LLM judge's tests: it answers in the OpenAI chat shape what a test's
``reply(attempt, reference)`` returns (the reply's text, or an HTTP status for a failed call) and records every
attempt it was sent.

    with judge_server(lambda attempt, reference: "Same result.\\nYes") as server:
        cfg = DomainConfig(classifier="llm", model="judge", base_url=server.base_url)
        ...; server.attempts  # what the judge was sent
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

ATTEMPT, REFERENCE = "\n\n## Attempt\n", "\n\n## Correct answer\n"


class JudgeServer:
    def __init__(self, base_url: str):
        self.base_url, self.attempts, self.lock = base_url, [], threading.Lock()


@contextmanager
def judge_server(reply: Callable[[str, str], str | int]) -> Iterator[JudgeServer]:
    from components.common.network import free_port
    port = free_port()
    server = JudgeServer(f"http://127.0.0.1:{port}/v1")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            user = body["messages"][-1]["content"]
            attempt, _, reference = user.partition(ATTEMPT)[2].rpartition(REFERENCE)
            with server.lock:
                server.attempts.append(attempt)
            out = reply(attempt, reference)
            status, payload = (out, {"error": {"code": out, "message": "failed"}}) if isinstance(out, int) else (
                200, {"id": "chatcmpl-judge", "object": "chat.completion", "model": body["model"],
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": out}}],
                      "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})
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
        yield server
    finally:
        http.shutdown()
        http.server_close()
