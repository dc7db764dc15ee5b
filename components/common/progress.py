"""One progress helper used by every long-running stage.

On a terminal it is a rich progress bar (rate, elapsed, ETA); elsewhere (CI,
Prefect logs, files) it prints a plain line at every 10% so logs show progress
too. ``S1FLOW_NO_PROGRESS=1`` silences both.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, **fields)``; fields (e.g. loss) are shown beside the bar."""
    if os.environ.get("S1FLOW_NO_PROGRESS") == "1":
        yield lambda n=1, **fields: None
        return
    if not sys.stderr.isatty():
        yield from _plain_lines(description, total)
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, transient=False, refresh_per_second=2) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: object) -> None:
            prog.update(task, advance=n, info=" ".join(f"{k}={v}" for k, v in fields.items()))

        yield advance


def _plain_lines(description: str, total: int) -> Iterator[Callable[..., None]]:
    state = {"done": 0, "next": 0.1}
    start = time.time()

    def advance(n: int = 1, **fields: object) -> None:
        state["done"] += n
        frac = state["done"] / max(total, 1)
        if frac >= state["next"] or state["done"] == total:
            elapsed = time.time() - start
            eta = elapsed / frac - elapsed if frac > 0 else 0.0
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"{description}: {state['done']}/{total} ({frac:.0%}) elapsed {elapsed:.0f}s "
                  f"eta {eta:.0f}s {info}".rstrip(), file=sys.stderr, flush=True)
            while state["next"] <= frac:
                state["next"] += 0.1

    yield advance
