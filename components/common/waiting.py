"""Wait for a service started as a child process to answer over HTTP.

    wait_http("http://127.0.0.1:8765/health", proc, timeout=60, why=lambda: log.read_text()[-3000:])
"""
from __future__ import annotations

import subprocess
import time
from typing import Callable, Optional


def wait_http(url: str, proc: Optional[subprocess.Popen] = None, timeout: float = 120.0,
              why: Callable[[], str] = lambda: "") -> None:
    """Poll ``url`` until it answers (any status below 500); fail at once if ``proc`` exits, and after
    ``timeout`` seconds otherwise, with ``why()`` (e.g. the service's log tail) in the error."""
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode}):\n{why()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout:g} s:\n{why()}")
