"""Start what a flow run waits for side by side instead of one after the other.

Without ``PREFECT_API_URL`` a flow's first API call starts Prefect's temporary
server (``SubprocessASGIServer``: a uvicorn subprocess that migrates its
database before it answers) and waits for it, ~15-20 s on 2 cores; the Ray
instance the distill and filter stages use then starts inside the first of
them, ~9 s more. ``s1flow run`` starts the same server from a thread before it
imports the flow and starts Ray meanwhile, so the three overlap; the flow then
finds the server running (Prefect keeps one per process) and Ray initialised.

    wait_for_server = start_prefect_server()
    ensure_ray()
    wait_for_server()   # re-raises the server's start-up failure, if any
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable


def start_prefect_server() -> Callable[[], None]:
    """Start Prefect's temporary API server in a thread when no ``PREFECT_API_URL`` is set (else nothing);
    returns a function that waits until it answers and raises what stopped it, if anything did."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None
    # the server's SQLite database lives there; a missing folder fails its start-up, which Prefect then retries
    # on another port, indefinitely
    Path(PREFECT_HOME.value()).expanduser().mkdir(parents=True, exist_ok=True)
    failure: list[BaseException] = []

    def boot() -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer
            # the instance get_client() starts on a flow's first call; booting beside Ray and the imports on a
            # small machine may take longer than Prefect's 20 s default
            SubprocessASGIServer().start(timeout=max(120, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
        except BaseException as e:  # handed to the waiter
            failure.append(e)

    thread = threading.Thread(target=boot, name="prefect-temporary-server", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failure:
            raise failure[0]

    return wait
