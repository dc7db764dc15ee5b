"""Run in-process work from a project directory, leaving the process as it found it."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

# mlflow.set_tracking_uri also exports the URI: the next project's run in this process would log into this one's
PROCESS_STATE = ("MLFLOW_TRACKING_URI",)


@contextlib.contextmanager
def in_project(root: Path) -> Iterator[Path]:
    """cwd = ``root`` and none of another project's process state; both restored afterwards."""
    cwd, saved = os.getcwd(), {k: os.environ.pop(k, None) for k in PROCESS_STATE}
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value
