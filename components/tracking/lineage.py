"""Where a model came from: the DVC hashes of the data it was trained and evaluated on.

With a ``dvc.lock`` (written by ``dvc repro``, or by the Prefect flow when it runs what dvc.yaml describes)
the hashes are DVC's own, so ``dvc get``/``dvc pull`` at that hash returns the exact bytes. Without one (a run
outside a DVC repository, or with overridden params) the same MD5 is computed here for files; directories get
the MD5 of their sorted ``path md5`` listing, marked with a ``dir:`` prefix.

    tags = input_hashes(Path("."), ["data/tiny/s1k.jsonl", "models/tiny/base"])

The selected dataset also goes to MLflow as a dataset input (:func:`log_dataset`: name, DVC md5 as
the digest, row count).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import yaml

from components.common.hashing import content_hash
from components.paths import Paths
from components.records import iter_jsonl


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


def log_dataset(path: str, name: str, dvc_md5: str, context: str) -> None:
    """``mlflow.log_input`` of a JSONL file: its name, DVC md5 as the digest, the row count in the profile
    (and as a tag); the frame holds the scalar fields only."""
    import mlflow
    import mlflow.data
    import pandas as pd
    rows = list(iter_jsonl(Path(path)))
    scalar = [{k: v for k, v in r.items() if isinstance(v, (str, int, float, bool)) or v is None} for r in rows]
    tags = {"rows": str(len(rows)), "dvc_md5": dvc_md5, "path": str(path)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hint about integer columns
        dataset = mlflow.data.from_pandas(pd.DataFrame(scalar), source=str(path), name=name, digest=dvc_md5[:36])
    mlflow.log_input(dataset, context=context, tags=tags)


def selected_dataset(paths: Paths) -> Optional[dict[str, Any]]:
    """``log_dataset`` arguments for the selection the model trains on (None when absent)."""
    rel = str(paths.selected.relative_to(paths.root))
    md5 = input_hashes(paths.root, [rel]).get(rel)
    return None if md5 is None else {"path": str(paths.selected), "name": paths.selected.stem, "dvc_md5": md5,
                                     "context": "training"}
