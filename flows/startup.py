"""Start what a flow run waits for side by side instead of one after the other.

Without ``PREFECT_API_URL`` a flow's first API call starts Prefect's temporary
server (``SubprocessASGIServer``: a uvicorn subprocess that migrates its
database before it answers) and waits for it, ~15-20 s on 2 cores; the Ray
instance the distill and filter stages use then starts inside the first of
them, ~9 s more. ``s1flow run`` starts the same server from a thread before it
imports the flow and starts Ray meanwhile, so the three overlap; the flow then
finds the server running (Prefect keeps one per process) and Ray initialised.

The libraries the stages run in this process (torch, transformers) are imported
meanwhile too, ~4 s of the core the server's boot leaves idle, instead of inside
the first stages. At the end, ``exit_after_cleanup`` runs the exit handlers (the
server's stop, Ray's shutdown, log flushes) and skips the interpreter's teardown of
those libraries, which takes another 3-4 s and writes nothing.

    wait_for_server = start_prefect_server()
    ensure_ray()
    import_stage_libraries()
    wait_for_server()   # re-raises the server's start-up failure, if any
    ...
    exit_after_cleanup(0)
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable, NoReturn

# What the stages import in this process anyway: torch (every stage that computes) and transformers (filter,
# tokenize, train, evaluate). Not transformers' model classes (~6 s more, sklearn among them): beside Ray's start
# and the server's boot on 2 cores they outlast the server and delay the flow instead
STAGE_LIBRARIES = ("torch", "transformers")


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


def import_stage_libraries(modules: tuple[str, ...] = STAGE_LIBRARIES) -> None:
    """Import what the stages will import in this process, while something else is waited for."""
    for name in modules:
        importlib.import_module(name)


def exit_after_cleanup(code: int = 0) -> NoReturn:
    """End the process as Python would, minus the teardown of its modules: wait for the threads Python waits for,
    flush and close the log handlers, run the exit handlers (atexit: Prefect's server stop, Ray's shutdown, ...),
    flush stdout and stderr, then exit. Call it only when nothing is left to write but through those handlers."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    # the log handlers flush first, while Prefect's server still runs: among the exit handlers, the server's stop
    # (registered last) runs before logging's (registered first), and Prefect's API log handler then waits its
    # full 5 s timeout for a server that is gone
    logging.shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to flush into
            pass
    os._exit(code)
