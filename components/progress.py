"""One progress-bar helper (rich) used by every long-running stage."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, **fields)``; fields (e.g. loss) are shown after the bar."""
    disable = os.environ.get("S1FLOW_NO_PROGRESS") == "1"
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=disable, transient=False, refresh_per_second=2) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: object) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            prog.update(task, advance=n, info=info)

        yield advance
