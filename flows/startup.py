"""Start what a flow run waits for side by side instead of one after the other.

Without ``PREFECT_API_URL`` a flow's first API call starts Prefect's temporary
server (a uvicorn subprocess, after importing the whole server package into this
process) and waits for it; the Ray instance the distill and filter stages use then
starts inside the first of them. ``s1flow run`` launches the same server
subprocess first thing (flows/temporary_server.py: without the import, so it boots
on the other core), starts Ray and imports the flow meanwhile, and hands the server
to the flow as its API; the flow finds Ray initialised.

The libraries the stages run in this process (torch, transformers) are imported
meanwhile too, while the server has not answered yet: time this process would
otherwise spend waiting, taken from the first stages. At the end, ``exit_after_cleanup`` flushes the logs, runs the
exit handlers (the server's stop, Ray's shutdown) and skips the interpreter's
teardown of those libraries, which takes another 3-4 s and writes nothing.

    server = start_prefect_server()     # None when PREFECT_API_URL is set
    ensure_ray()
    import_stage_libraries(server)
    with prefect_api(server):           # waits until it answers (raises with its output if it never does)
        run_the_flow()
    exit_after_cleanup(0)
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn, Optional

from flows.temporary_server import TemporaryServer, server_environment

# What the stages import in this process anyway: torch (every stage that computes) and transformers (filter,
# tokenize, train, evaluate). Not transformers' model classes (~6 s more, sklearn among them): beside Ray's start
# and the server's boot on 2 cores they outlast the server and delay the flow instead
STAGE_LIBRARIES = ("torch", "transformers")


def start_prefect_server() -> Optional[TemporaryServer]:
    """Launch Prefect's temporary API server now when no ``PREFECT_API_URL`` is set (else nothing, None): the
    server a flow's client would start on its first call, with this process's Prefect settings."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    # the server's SQLite database lives there; in a missing folder it cannot open, and the server's start fails
    Path(PREFECT_HOME.value()).expanduser().mkdir(parents=True, exist_ok=True)
    return TemporaryServer.launch(server_environment())


@contextmanager
def prefect_api(server: Optional[TemporaryServer]) -> Iterator[None]:
    """Wait until ``server`` answers, then make it this process's Prefect API meanwhile (nothing for None)."""
    if server is None:
        yield
        return
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    # beside Ray's start and the imports on a small machine the boot may take longer than Prefect's 20 s default
    server.wait_until_ready(timeout=max(120, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    with server.as_api():
        yield


def import_stage_libraries(server: Optional[TemporaryServer], modules: tuple[str, ...] = STAGE_LIBRARIES) -> None:
    """Import what the stages will import in this process while ``server`` boots: one module after the other,
    until it answers (then the flow can start; the stages import the rest). Nothing without a server to wait for."""
    for name in modules:
        if server is None or server.answers():
            return
        importlib.import_module(name)


def exit_after_cleanup(code: int = 0) -> NoReturn:
    """End the process as Python would, minus the teardown of its modules: the threading shutdown Python does
    first (exit callbacks, non-daemon threads joined), the log handlers flushed and closed, the exit handlers
    (atexit: Prefect's server stop, Ray's shutdown, ...), stdout and stderr flushed, then the exit. Call it only
    when nothing is left to write but through those handlers."""
    # what the interpreter's exit does first: the threading exit callbacks (Prefect's API log and events workers
    # drain while the server still runs; idle thread-pool workers are woken) and the join of non-daemon threads
    threading._shutdown()
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
