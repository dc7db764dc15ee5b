"""Real services on 127.0.0.1 for tests: a Prefect server, an MLflow server, a moto S3 server.

Each starts as a child process on a free port and is stopped by the fixture that started it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from components.serve.launch import free_port

BIN = Path(sys.executable).parent


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def service(cmd: list[str], health_url: str, log: Path, env: dict | None = None, cwd: Path | None = None) -> Iterator[None]:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy(), cwd=cwd,
                                start_new_session=True)
    try:
        wait_http(health_url, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def prefect_server(home: Path) -> Iterator[dict]:
    """A Prefect server with its own PREFECT_HOME; yields the env that points clients at it."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_UI_ENABLED": "false"}
    with service([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 f"http://127.0.0.1:{port}/api/health", home / "server.log", env):
        yield env


@contextmanager
def moto_s3() -> Iterator[str]:
    """A moto S3 server; yields its endpoint URL (credentials: any, from the environment)."""
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"moto-{port}.log"
    with service([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                 f"http://127.0.0.1:{port}/moto-api/", log):
        yield f"http://127.0.0.1:{port}"
