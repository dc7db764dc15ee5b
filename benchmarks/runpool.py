"""Run benchmark jobs as subprocesses, ``parallel`` at a time (each job its own process and folder).

    results = run_pool(keys, start=lambda k: subprocess.Popen(...), result_file=lambda k: ..., log_file=..., parallel=2)
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable, Hashable, Optional


def run_pool(keys: list[Hashable], start: Callable[[Hashable], Optional[subprocess.Popen]],
             result_file: Callable[[Hashable], Path], log_file: Callable[[Hashable], Path],
             parallel: int = 1, poll_s: float = 2.0) -> dict:
    """``start(key)`` launches a job (or returns None: already done); each job leaves its JSON result in
    ``result_file(key)`` and its output in ``log_file(key)``. Returns {key: result} of the jobs that finished."""
    import json
    results: dict = {}

    def collect(key: Hashable, returncode: int) -> None:
        out = result_file(key)
        if returncode == 0 and out.exists():
            results[key] = json.loads(out.read_text())
            brief = {k: f"<{len(v)} entries>" if isinstance(v, dict) and len(v) > 20 else v
                     for k, v in results[key].items()}  # a run's per-question results stay in its file
            print(f"done {key}: {json.dumps(brief)}", flush=True)
        else:
            print(f"FAILED {key} (see {log_file(key)})", flush=True)

    todo, running = list(keys), []
    while todo or running:
        while todo and len(running) < parallel:
            key = todo.pop(0)
            proc = start(key)
            if proc is None:
                collect(key, 0)
            else:
                running.append((key, proc))
        time.sleep(poll_s if running else 0)
        for key, proc in list(running):
            if proc.poll() is not None:
                running.remove((key, proc))
                collect(key, proc.returncode)
    return results


def run_stages(root, overrides: list[str], stages: list[str]) -> tuple[dict, dict]:
    """Run pipeline ``stages`` in ``root`` (this process, params.yaml + ``overrides``): (results, seconds) per stage."""
    import os

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
