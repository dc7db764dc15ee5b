"""Processes on this host found by their command lines, with their descendants (Linux /proc).

Stopping a local Ray node by pid needs this: `ray stop` stops every Ray on the host, and a node's workers
do not carry its temp dir in their command lines, only its raylet does.

    pids = with_descendants(processes_mentioning("/tmp/my-ray-temp"))
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def command_line(pid: int) -> str:
    """``pid``'s command line, arguments joined by NULs ('' when it is gone or unreadable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
    except OSError:
        return ""


def processes_mentioning(*markers: str) -> set[int]:
    """Pids (never this process's) whose command line holds any of ``markers``."""
    me = os.getpid()
    return {int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) != me and any(m in command_line(int(e)) for m in markers)}


def with_descendants(pids: Iterable[int]) -> set[int]:
    """``pids`` and every process started under them, transitively."""
    found = set(pids)
    todo = list(found)
    while todo:
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                for child in map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split()):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
        except OSError:
            pass
    return found
