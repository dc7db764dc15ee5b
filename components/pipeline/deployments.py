"""Register the Prefect deployments of prefect.yaml against the current Prefect server.

Creates the work pools named there (process workers) and the tag concurrency
limit that keeps trainings one at a time, then runs ``prefect deploy --all``
with the flow code's directory pinned (``$S1FLOW_PROJECT_DIR``).

    register_deployments(Path("."))      # what `s1flow deploy` runs
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

TRAIN_TAG = "s1flow-train"


def _prefect(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect")
    return subprocess.run([str(exe), "--no-prompt", *args], env=env, cwd=cwd, capture_output=True, text=True)


def register_deployments(project: Path) -> list[str]:
    """Create pools + the training limit (idempotent), deploy; returns the deployment names."""
    project = project.resolve()
    deployments = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"]
    env = {**os.environ, "S1FLOW_PROJECT_DIR": str(project)}
    run = lambda *args: _prefect(*args, env=env, cwd=project)  # noqa: E731
    for pool in sorted({d["work_pool"]["name"] for d in deployments}):
        if run("work-pool", "inspect", pool).returncode != 0:
            run("work-pool", "create", pool, "--type", "process").check_returncode()
    if run("concurrency-limit", "inspect", TRAIN_TAG).returncode != 0:
        run("concurrency-limit", "create", TRAIN_TAG, "1").check_returncode()
    done = run("deploy", "--all")
    if done.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return [f"{_flow_name(d['entrypoint'])}/{d['name']}" for d in deployments]


def _flow_name(entrypoint: str) -> str:
    return "s1-" + entrypoint.rsplit(":", 1)[1].removeprefix("s1_").replace("_", "-")
