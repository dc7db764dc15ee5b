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


def _prefect(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect")
    return subprocess.run([str(exe), "--no-prompt", *args], env=env, capture_output=True, text=True, check=check)


def work_pools(project: Path) -> list[str]:
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    return sorted({d["work_pool"]["name"] for d in spec["deployments"]})


def register_deployments(project: Path, names: list[str] | None = None) -> list[str]:
    """Create pools + the training limit (idempotent), deploy; returns the deployment names."""
    project = project.resolve()
    env = {**os.environ, "S1FLOW_PROJECT_DIR": str(project)}
    for pool in work_pools(project):
        if _prefect("work-pool", "inspect", pool, env=env, check=False).returncode != 0:
            _prefect("work-pool", "create", pool, "--type", "process", env=env)
    if _prefect("concurrency-limit", "inspect", TRAIN_TAG, env=env, check=False).returncode != 0:
        _prefect("concurrency-limit", "create", TRAIN_TAG, "1", env=env)
    args = ["deploy", "--all"] if not names else ["deploy", *sum((["--name", n] for n in names), [])]
    done = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args], cwd=project,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    return [f"{_flow_name(d['entrypoint'])}/{d['name']}" for d in spec["deployments"]]


def _flow_name(entrypoint: str) -> str:
    return "s1-" + entrypoint.rsplit(":", 1)[1].removeprefix("s1_").replace("_", "-")
