"""Real services on 127.0.0.1 for tests: a Prefect server, an MLflow server, a moto S3 server.

Each starts as a child process on a free port and is stopped by the fixture that started it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from components.common.network import free_port
from components.common.waiting import wait_http

BIN = Path(sys.executable).parent


@contextmanager
def service(cmd: list[str], health_url: str, log: Path, env: dict | None = None, cwd: Path | None = None) -> Iterator[None]:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy(), cwd=cwd,
                                start_new_session=True)
    try:
        wait_http(health_url, proc, why=lambda: log.read_text()[-3000:])
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


@contextmanager
def moto_bucket(monkeypatch, bucket: str) -> Iterator[str]:
    """A moto S3 server with ``bucket`` created; credentials and endpoint only through the environment.
    Yields the server's endpoint URL."""
    import boto3
    with moto_s3() as endpoint:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield endpoint
