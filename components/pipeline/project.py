"""A self-contained copy of the project for one profile, in another directory: params.yaml with that profile
active and written out in full (DVC reads each key a stage tracks, so a profile that ``extends`` another is
expanded), dvc.yaml, and with ``with_code`` the code and files DVC hashes.

    write_project(Path("/tmp/smoke"), "micro", with_code=True)    # then: cd /tmp/smoke && s1flow run
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from components.config import ConfigError, read_params, resolve_profiles

PROJECT = Path(__file__).resolve().parents[2]
# What a stage in dvc.yaml depends on besides params.yaml: the code, the shipped base models, the stage launcher.
STAGE_FILES = ("components", "releases", "bin")


def project_params(raw: dict, profile: str) -> dict:
    """``raw`` params with ``profile`` active and its block expanded (no ``extends`` left in it)."""
    blocks = resolve_profiles(raw)
    if profile not in blocks:
        raise ConfigError(f"profile: {profile!r} is not defined; choose one of {sorted(blocks)}")
    return {**raw, "profile": profile, profile: blocks[profile]}


def write_project(dest: Path, profile: str, with_code: bool = False, source: Path = PROJECT) -> Path:
    """params.yaml + dvc.yaml (+ ``STAGE_FILES`` with ``with_code``) of ``source`` in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    params = project_params(read_params(source / "params.yaml"), profile)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(source / "dvc.yaml", dest / "dvc.yaml")
    if with_code:
        for name in STAGE_FILES:
            if (source / name).exists():
                shutil.copytree(source / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
