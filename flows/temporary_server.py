"""Prefect's temporary API server, launched without importing it into this process.

Prefect starts its temporary server (``SubprocessASGIServer``) from the client's
process, which first imports the whole server package (FastAPI, every API route:
~5 s of one core under the GIL, beside Ray's start and the flow's imports) only to
spawn a uvicorn subprocess. ``TemporaryServer`` spawns the same subprocess (the
command and environment Prefect's ``_run_uvicorn_command`` uses; a test compares
them with the installed Prefect) right away, so the server boots on the other core
while this process imports, and the flow reaches it through ``PREFECT_API_URL``.

    server = TemporaryServer.launch(server_environment())   # returns at once
    ...
    server.wait_until_ready(timeout=120)   # raises with the server's output if it never answered
    with server.as_api():                  # PREFECT_API_URL for this process's Prefect client
        run_the_flow()
    server.stop()                          # also at exit
"""
from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from components.common.network import free_port

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy

# what Prefect's SubprocessASGIServer._run_uvicorn_command adds to the environment: no UI, the ephemeral mode
# (no background services), the final settings layer
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
STARTUP_FAILURE = 3  # uvicorn's exit code for any failed start-up; Prefect then tries another port
PORT_RETRIES = 3     # ... here only when the port was taken meanwhile, and at most this often


def uvicorn_command(port: int) -> list[str]:
    """The command Prefect runs for its temporary server (``prefect.server.api.server:create_app`` in uvicorn)."""
    import importlib.util
    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # without importing prefect
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
            "error", "--lifespan", "on"]


def server_environment() -> dict[str, str]:
    """The server's environment as Prefect composes it: this process's, the server switches, then this process's
    Prefect settings (from the environment and the active profile)."""
    from prefect.settings import get_current_settings
    return {**os.environ, **SERVER_ENV, **get_current_settings().to_environment_variables(exclude_unset=True)}


class TemporaryServer:
    """One Prefect API server subprocess on 127.0.0.1, stopped at exit."""

    def __init__(self, env: dict[str, str]):
        self.env, self.port, self.process, self.retries = env, 0, None, 0
        self.output = tempfile.TemporaryFile()  # the server's stdout and stderr, for a failed start's message

    @classmethod
    def launch(cls, env: dict[str, str]) -> "TemporaryServer":
        """Spawn the server with ``env`` (see :func:`server_environment`); stopped at exit at the latest."""
        server = cls(env)
        server._spawn()
        atexit.register(server.stop)
        return server

    def _spawn(self) -> None:
        self.port = free_port()
        self.output.seek(0)
        self.output.truncate()
        self.process = subprocess.Popen(uvicorn_command(self.port), env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=self.output, stderr=subprocess.STDOUT)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_until_ready(self, timeout: float) -> None:
        """Poll ``/api/health`` until it answers 200; a port taken meanwhile is retried on another one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == STARTUP_FAILURE and self.retries < PORT_RETRIES and "address already in use" in self._output():
                self.retries += 1  # another process took the port between free_port() and uvicorn's bind
                self._spawn()
                continue
            if code is not None:
                raise RuntimeError(f"Prefect's temporary server exited with code {code} before it answered:\n"
                                   f"{self._output()}")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Prefect's temporary server did not answer within {timeout:.0f} s on {self.api_url} "
                           f"(set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS to wait longer):\n{self._output()}")

    def answers(self) -> bool:
        """Whether ``/api/health`` answers 200 right now."""
        try:
            with _NO_PROXY.open(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @contextmanager
    def as_api(self) -> Iterator[None]:
        """This process's Prefect client talks to the server meanwhile (no UI links: it serves no UI, as Prefect's
        own temporary server; `make prefect-ui` shows the runs)."""
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings
        updates = {PREFECT_API_URL: self.api_url}
        if "ui_url" not in get_current_settings().model_fields_set:  # a UI URL the user set stays
            updates[PREFECT_UI_URL] = ""
        with temporary_settings(updates=updates):
            yield

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 5 s), after the log handlers have flushed: Prefect's API
        log handler sends what is left to this server, and waits its full 5 s timeout for one that is gone."""
        if self.process is None:
            return
        flush_log_handlers()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _output(self) -> str:
        self.output.seek(0)
        return self.output.read().decode(errors="replace")[-4000:]


def flush_log_handlers() -> None:
    """Flush every handler of every logger (without closing them, unlike ``logging.shutdown``)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for handler in {h for lg in loggers for h in lg.handlers}:
        try:
            handler.flush()
        except Exception:  # a handler that cannot flush must not keep the server running
            pass
