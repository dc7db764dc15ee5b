"""The micro profile of params.yaml as a project of its own, for the tests that run the pipeline."""
from __future__ import annotations

from pathlib import Path

from components.pipeline.project import write_project

PROFILE = "micro"


def write_micro_project(dest: Path, with_code: bool = False) -> Path:
    """params.yaml (micro active, in full) + dvc.yaml (+ the code DVC hashes and the stage launcher) in ``dest``."""
    return write_project(dest, PROFILE, with_code)
