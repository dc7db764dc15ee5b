"""Prefect result caching that cannot go stale: cache keys and the output ledger.

A stage's cache key hashes its declared params, its code and the upstream stage's
outputs as they are on disk; the ledger (runs/<profile>/ledger.json) records the
outputs a stage left under a key, and a cached result is trusted only while the disk
still holds them.

    key = stage_cache_key("filter", cfg, upstream=outputs_signature("distill", paths))
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from components.config import ProfileConfig
from components.paths import Paths
from components.pipeline.registry import STAGES, code_digest, stage_params
from components.records import write_json


def _files_signature(path: Path) -> list:
    if not path.exists():
        return [str(path), "missing"]
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def outputs_signature(name: str, paths: Paths) -> str:
    """What this stage's outputs look like on disk now (paths, sizes, mtimes)."""
    state = [_files_signature(o) for o in STAGES[name].written(paths)]
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:24]


def stage_cache_key(name: str, cfg: ProfileConfig, upstream: str = "") -> str:
    """Identifies one stage's work: its params, the code, and the upstream stage's outputs."""
    state = [name, stage_params(name, cfg), code_digest(name), upstream]
    return f"s1flow-{cfg.name}-{name}-" + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]


class OutputLedger:
    """The outputs a stage left on disk when it finished under a cache key (runs/<profile>/ledger.json).
    A cached result is trusted only while the disk still holds those outputs: after they were removed,
    changed, or overwritten by a run with other params, the stage runs again."""

    def __init__(self, paths: Paths):
        self.paths, self.file = paths, paths.runs / "ledger.json"

    def _read(self) -> dict:
        return json.loads(self.file.read_text()) if self.file.exists() else {}

    def stale(self, name: str, key: str) -> bool:
        return self._read().get(key) != outputs_signature(name, self.paths)

    def record(self, name: str, key: str) -> None:
        write_json(self.file, {**self._read(), key: outputs_signature(name, self.paths)})
