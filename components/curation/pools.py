"""Where the filter stage leaves its two pools (the select stage and the registry read them).

    quality_pool_path(paths)  # data/<profile>/quality_pool.jsonl: after quality + decontamination, before difficulty
    paths.filtered            # data/<profile>/filtered.jsonl: after every filter
"""
from __future__ import annotations

from pathlib import Path

from components.paths import Paths


def quality_pool_path(paths: Paths) -> Path:
    """The pool after the quality filter and decontamination, before difficulty (the ablations' pool)."""
    return paths.filtered.with_name("quality_pool.jsonl")
