"""Register the Prefect deployments of prefect.yaml against the current Prefect server.

Creates the work pools named there (process workers) and the tag concurrency
limit that keeps trainings one at a time, then runs ``prefect deploy --all``
with the flow code's directory pinned (``$S1FLOW_PROJECT_DIR``).

    register_deployments(Path("."))      # what `s1flow deploy` runs

A run of a deployment may pass its own ``overrides`` (``prefect deployment run ... --param overrides=...``).
Those may not touch :data:`PROTECTED` keys (where requests and API keys go, which models and datasets run, whose
code runs, the pins) unless the deployment lists the key under ``overridable`` in prefect.yaml:
:func:`check_run_overrides` refuses such a run, naming the key, before any work.
"""
from __future__ import annotations

import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Optional

import yaml

TRAIN_TAG = "s1flow-train"
PROJECT = Path(__file__).resolve().parents[2]  # the checkout the flow code runs from (prefect.yaml beside it)

# Keys (dotted; '*' one level) a deployment run's overrides may change only when the deployment declares them
# overridable. A key above one of them (``teacher``) or below it counts as touching it.
PROTECTED = ("*.base_url", "*.api_key_env", "model.name", "model.revision", "difficulty.students",
             "difficulty.revisions", "teacher.model", "domain.model", "evaluate.methods.rebase.reward",
             "evaluate.methods.rebase.reward_revision", "evaluate.methods.rebase.reward_recipe",
             "evaluate.trust_remote_code",
             "pool.sources")


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


def protected_key(key: str) -> Optional[str]:
    """The :data:`PROTECTED` pattern an override of ``key`` touches (the key, a section above it, a key below
    it), or None."""
    parts = key.strip().split(".")
    for pattern in PROTECTED:
        pat = pattern.split(".")
        if all(fnmatchcase(k, p) for k, p in zip(parts, pat)):
            return pattern
    return None


def refused_overrides(overrides: Iterable[str], declared: Iterable[str] = (),
                      overridable: Iterable[str] = ()) -> list[str]:
    """``key: why`` for each override a run may not pass: one touching a protected key that is neither in the
    deployment's own ``overrides`` (``declared``, written in prefect.yaml) nor covered by its ``overridable``."""
    declared, allowed = set(declared), list(overridable)
    out = []
    for override in overrides:
        if override in declared:
            continue
        key = override.split("=", 1)[0].strip()
        pattern = protected_key(key)
        if pattern and not any(protected_key_within(key, a) for a in allowed):
            out.append(f"{key}: a deployment run may not override {pattern} (where requests and keys go, which "
                       "models run and whose code); change params.yaml, or list the key under the deployment's "
                       "overridable in prefect.yaml")
    return out


def protected_key_within(key: str, allowed: str) -> bool:
    """Whether ``key`` is ``allowed`` or lies under it ('*' matches one level)."""
    parts, pat = key.split("."), allowed.split(".")
    return len(parts) >= len(pat) and all(fnmatchcase(k, p) for k, p in zip(parts, pat))


def deployment_entry(flow_name: str, deployment: str, project: Path = PROJECT) -> dict:
    """The prefect.yaml entry of ``flow_name/deployment`` ({} when there is none)."""
    for entry in yaml.safe_load((project / "prefect.yaml").read_text()).get("deployments", []):
        if entry.get("name") == deployment and _flow_name(entry["entrypoint"]) == flow_name:
            return entry
    return {}


def check_run_overrides(flow_name: str, deployment: Optional[str], overrides: Iterable[str], params_path: str,
                        project: Path = PROJECT) -> None:
    """Refuse a deployment run whose parameters change what its deployment protects (nothing to check outside a
    deployment: ``s1flow run`` takes its overrides from the user at the command line)."""
    if deployment is None:
        return
    entry = deployment_entry(flow_name, deployment, project)
    params = entry.get("parameters") or {}
    overridable = entry.get("overridable") or []
    problems = refused_overrides(overrides, params.get("overrides") or [], overridable)
    if params_path != params.get("params_path", "params.yaml") and "params_path" not in overridable:
        problems.append(f"params_path: a deployment run may not read another params file ({params_path!r}); list "
                        "params_path under the deployment's overridable in prefect.yaml to allow it")
    if problems:
        raise ValueError(f"deployment {flow_name}/{deployment}: refused overrides:\n" +
                         "\n".join(f"  {p}" for p in problems))
