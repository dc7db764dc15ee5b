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

    async def gate(worst: float):
        return None

    async def book(worst: float, usd: float):
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


class _RecordingJournal(SpendJournal):
    """A journal that records, for each entry, the thread that wrote it and what the teacher had seen by then."""

    def __init__(self, store, seen):
        super().__init__(store, writer="w")
        self.entries, self.seen = [], seen

    def _append(self, call, kind, usd):
        super()._append(call, kind, usd)
        self.entries.append((kind, threading.get_ident(), len(self.seen)))


def test_journal_writes_run_off_the_event_loop_reserve_before_the_request_settle_before_the_response(tmp_path):
    """An fsync (or an S3 PUT) per entry must not stall the worker's other calls: the entries are written on
    another thread, still in order: reserved before the request leaves, settled before the response is used."""
    cfg = TeacherConfig(kind="vllm", model="m", base_url="http://teacher.test/v1", price_input_per_mtok=1.0,
                        price_output_per_mtok=2.0)
    seen: list[list] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append([kind for kind, _, _ in journal.entries])  # what the journal held when the request arrived
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}],
                                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    journal = _RecordingJournal(ShardStore(tmp_path), seen)

    async def gate(worst: float):
        return None

    async def book(worst: float, usd: float):
        pass

    async def call() -> tuple[int, list, int]:
        loop_thread = threading.get_ident()
        transport = MeteredTransport(cfg, journal, gate, book, inner=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post("http://teacher.test/v1/chat/completions", json={"model": "m"})
            held_when_used = [kind for kind, _, _ in journal.entries]
        return loop_thread, held_when_used, response.status_code
    loop_thread, held_when_used, status = asyncio.run(call())
    journal.close()
    assert status == 200
    assert seen == [["reserve"]] and held_when_used == ["reserve", "settle"]
    assert all(thread != loop_thread for _, thread, _ in journal.entries)
