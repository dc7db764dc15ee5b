"""The metered transport reaches the teacher as a plain client would: through the proxy the environment names."""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from components.config import TeacherConfig
from components.distill.journal import MeteredTransport, SpendJournal, environment_proxy
from components.distill.shards import ShardStore


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy that answers for the teacher itself and records the absolute URLs it was asked for."""
    seen: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.path)
        body = json.dumps({"choices": [{"message": {"content": "ok"}}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_environment_proxy_follows_the_proxy_variables_and_no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert environment_proxy("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert environment_proxy("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert environment_proxy("http://api.example.com/v1") is None
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert environment_proxy("https://api.example.com/v1") is None


def test_a_metered_call_goes_through_the_environments_proxy_and_is_settled(tmp_path, monkeypatch):
    _Proxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
    cfg = TeacherConfig(kind="vllm", model="m", base_url="http://teacher.invalid/v1", price_input_per_mtok=1.0,
                        price_output_per_mtok=2.0)
    booked: list[float] = []

    async def gate():
        return None

    async def book(usd: float):
        booked.append(usd)

    async def call() -> int:
        transport = MeteredTransport(cfg, SpendJournal(ShardStore(tmp_path), writer="w"), gate, book)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post("http://teacher.invalid/v1/chat/completions", json={"model": "m"})
        await transport.aclose()
        return response.status_code
    try:
        assert asyncio.run(call()) == 200
    finally:
        server.shutdown()
    assert _Proxy.seen == ["http://teacher.invalid/v1/chat/completions"]
    assert booked == [(10 * 1.0 + 5 * 2.0) / 1e6]
