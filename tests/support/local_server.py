"""The OpenAI-compatible app (components/serving/service.py) under uvicorn in a thread, without Ray."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def serving(service) -> Iterator[str]:
    """Serve ``service`` on a free loopback port for the block; yields its base URL."""
    import uvicorn

    from components.common.network import free_port
    from components.serving.service import build_api
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class WrappedEngine:
    """An engine that delegates the whole engine protocol to ``inner``; subclasses override
    ``generate_forced`` to script failures or answers."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.tokenizer, self.vocab = inner.name, inner.tokenizer, inner.vocab
        self.batch_size, self.unlimited, self.context_length = inner.batch_size, inner.unlimited, inner.context_length

    def generate(self, prompts, sampling):
        return self.inner.generate(prompts, sampling)

    def generate_forced(self, prompts, specs, sampling, **kw):
        return self.inner.generate_forced(prompts, specs, sampling, **kw)

    def shutdown(self):
        """The inner engine is shared (a session fixture): it stays up."""


def in_flight(url) -> int:
    import httpx
    return httpx.get(f"{url}/health", timeout=5).json()["in_flight"]


def wait_in_flight(url, value, within_s=30.0) -> None:
    """Until the server's ``in_flight`` is ``value`` (asserting it gets there within ``within_s``)."""
    end = time.monotonic() + within_s
    while in_flight(url) != value:
        assert time.monotonic() < end, f"in_flight stayed {in_flight(url)}, expected {value}"
        time.sleep(0.05)
