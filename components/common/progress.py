"""One progress helper used by every long-running stage.

On a terminal it is a rich progress bar (rate, elapsed, ETA); elsewhere (CI,
Prefect logs, files) it prints a plain line at every 10% so logs show progress
too. ``S1FLOW_NO_PROGRESS=1`` silences both. Other libraries' bars follow the same
rule: :func:`quiet_foreign_bars` switches off tqdm (Hugging Face, Ray) off a TTY, and
the HF Trainer prints :class:`PlainLines` instead (components/training/live_metrics.py).
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


def interactive() -> bool:
    """Whether live bars belong on stderr: a terminal, and progress not switched off."""
    return os.environ.get("S1FLOW_NO_PROGRESS") != "1" and sys.stderr.isatty()


def quiet_foreign_bars() -> None:
    """Off a terminal, other libraries' progress bars (tqdm's carriage-return fragments) are switched off:
    Hugging Face hub/transformers/datasets, every tqdm that honours ``TQDM_DISABLE``, Ray Data.
    On a terminal nothing changes."""
    if sys.stderr.isatty() and os.environ.get("S1FLOW_NO_PROGRESS") != "1":
        return
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
                "RAY_DATA_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    # transformers reads HF_HUB_DISABLE_PROGRESS_BARS when it is imported; only an already imported one is told
    # (importing it here would add ~2 s to the command line's start-up)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()


class PlainLines:
    """One line on stderr at every 10% of ``total`` (and at the end): done/total, elapsed, ETA, fields."""

    def __init__(self, description: str, total: int, done: int = 0):
        self.description, self.total, self.done, self.start = description, max(total, 1), done, time.time()
        self.first = done
        self.next = (int(done / self.total * 10) + 1) / 10

    def advance(self, n: int = 1, **fields: object) -> None:
        self.done += n
        frac = self.done / self.total
        if frac >= self.next or self.done == self.total:
            elapsed = time.time() - self.start
            ran = (self.done - self.first) / self.total
            eta = elapsed / ran * (1 - frac) if ran > 0 else 0.0
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"{self.description}: {self.done}/{self.total} ({frac:.0%}) elapsed {elapsed:.0f}s "
                  f"eta {eta:.0f}s {info}".rstrip(), file=sys.stderr, flush=True)
            while self.next <= frac:
                self.next += 0.1


def _plain_lines(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield PlainLines(description, total).advance
