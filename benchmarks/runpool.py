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


def run_stages(root, overrides: list[str], stages: list[str]) -> tuple[dict, dict]:
    """Run pipeline ``stages`` in ``root`` (this process, params.yaml + ``overrides``): (results, seconds) per stage."""
    import os
    from pathlib import Path

    from components.config import load_config
    from components.paths import Paths
    from components.pipeline.registry import run_stage
    repo, root = Path(__file__).resolve().parents[1], Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    if not (root / "infra").exists():
        os.symlink(repo / "infra", root / "infra")
    cfg = load_config(repo / "params.yaml", overrides=overrides)
    paths = Paths.for_profile(cfg.name, root)
    results, seconds = {}, {}
    for name in stages:
        started = time.perf_counter()
        results[name] = run_stage(name, cfg, paths)
        seconds[name] = round(time.perf_counter() - started, 1)
    return results, seconds
