"""Where a model came from: the DVC hashes of the data it was trained and evaluated on.

With a ``dvc.lock`` (the pipeline ran through ``dvc repro``) the hashes are DVC's own,
so ``dvc get``/``dvc pull`` at that hash returns the exact bytes. Without one (a
Prefect-only run) the same MD5 is computed here for files; directories get the MD5
of their sorted ``path md5`` listing, marked with a ``dir:`` prefix.

    tags = input_hashes(Path("."), ["data/tiny/s1k.jsonl", "models/tiny/base"])
"""
from __future__ import annotations

from pathlib import Path

import yaml

from components.common.hashing import content_hash


def _dvc_lock_hashes(root: Path) -> dict[str, str]:
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    out = {}
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            if "md5" in entry:
                out[entry["path"]] = entry["md5"]
    return out


def input_hashes(root: Path, rel_paths: list[str]) -> dict[str, str]:
    """``{relative path: hash}`` for each existing path, DVC's hash where dvc.lock has a current one."""
    locked, out = _dvc_lock_hashes(root), {}
    for rel in rel_paths:
        path = root / rel
        if not path.exists():
            continue
        mine = content_hash(path)
        lock = locked.get(rel, "")
        # dvc.lock is current when it agrees with the bytes (files) — else ours, never a stale hash
        out[rel] = lock if lock and (lock == mine or (path.is_dir() and lock.endswith(".dir"))) else mine
    return out
