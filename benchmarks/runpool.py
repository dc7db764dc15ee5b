"""Run benchmark jobs as subprocesses, ``parallel`` at a time (each job its own process and folder).

    run_pool(keys, start=lambda k: subprocess.Popen(...), finish=lambda k, rc: ..., parallel=2)
"""
from __future__ import annotations

import subprocess
import time
from typing import Callable, Hashable, Optional


def run_pool(keys: list[Hashable], start: Callable[[Hashable], Optional[subprocess.Popen]],
             finish: Callable[[Hashable, int], None], parallel: int = 1, poll_s: float = 2.0) -> None:
    """``start(key)`` launches a job (or returns None when there is nothing to run); ``finish(key, returncode)``
    is called once per launched job as it ends."""
    todo, running = list(keys), []
    while todo or running:
        while todo and len(running) < parallel:
            key = todo.pop(0)
            proc = start(key)
            if proc is not None:
                running.append((key, proc))
        time.sleep(poll_s if running else 0)
        for key, proc in list(running):
            if proc.poll() is not None:
                running.remove((key, proc))
                finish(key, proc.returncode)
