"""One record of what is done: the Prefect flow reads and writes dvc.lock as ``dvc repro`` does.

A stage the flow finishes is committed as ``dvc commit`` records it (deps, params and outs hashes in dvc.lock, its
cached outs in the DVC cache, so ``dvc push`` pushes them). A stage that dvc.lock records as up to date (``dvc
repro`` or an earlier flow finished it) is not run again: its result is read back from its metrics file. Both hold
only while the flow runs what dvc.yaml describes: the params.yaml beside dvc.yaml in a DVC repository, its active
profile, no overrides.

    reason = unrecorded_reason(Path("params.yaml"), "tiny", [], Path("."))  # "" when dvc.yaml describes the run
    finished_result("filter", paths)   # the stage's result when dvc.lock says it is up to date, else None
    record_stage(Path("."), "filter")  # commit it to dvc.lock and the DVC cache unless it already is
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from components.config import read_params
from components.paths import Paths
from components.pipeline.registry import recorded_result


def unrecorded_reason(params_path: Path, profile: str, overrides: Sequence[str], root: Path) -> str:
    """Why dvc.yaml does not describe a run of ``profile`` from ``params_path`` writing under ``root``
    ("" when it does)."""
    if overrides:
        return f"the run overrides params ({', '.join(overrides)}); dvc.yaml runs params.yaml as it is"
    if not (root / "dvc.yaml").is_file():
        return f"no dvc.yaml in {root.resolve()}"
    if params_path.resolve() != (root / "params.yaml").resolve():
        return f"the run reads {params_path}, not the params.yaml beside dvc.yaml"
    if not _dvc_root(root):
        return f"{root.resolve()} is in no DVC repository (`dvc init` makes one)"
    active = read_params(params_path).get("profile")
    if profile != active:
        return f"the run's profile {profile!r} is not params.yaml's profile ({active!r})"
    return ""


def _dvc_root(root: Path) -> Optional[str]:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    try:
        return Repo.find_root(str(root.resolve()))
    except NotDvcRepoError:
        return None


def _target(root: Path, name: str) -> str:
    return f"{(root / 'dvc.yaml').resolve()}:{name}"


def stage_up_to_date(root: Path, name: str) -> bool:
    """Whether dvc.lock matches the stage's deps, params and outs on disk (``dvc status`` has nothing on it)."""
    from dvc.repo import Repo
    with Repo(_dvc_root(root)) as repo:
        return not repo.status(targets=[_target(root, name)])


def finished_result(name: str, paths: Paths) -> Optional[dict]:
    """The stage's result when dvc.lock records it as up to date and its metrics file holds the result."""
    return recorded_result(name, paths) if stage_up_to_date(paths.root, name) else None


def record_stage(root: Path, name: str) -> bool:
    """Commit the stage to dvc.lock and its cached outs to the DVC cache (``dvc commit --force NAME``) unless
    dvc.lock already records it as it is on disk; the repository lock is held throughout. True when it wrote."""
    from dvc.repo import Repo, lock_repo
    with Repo(_dvc_root(root)) as repo, lock_repo(repo):
        if not repo.status(targets=[_target(root, name)]):
            return False
        repo.commit(_target(root, name), force=True)
        return True
