"""A micro version of the tiny profile: the whole pipeline in about a minute, for tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.conftest import REPO

MICRO = {
    "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128,
              "vocab_size": 300},
    "pretrain": {"documents": 600, "steps": 30, "batch_size": 8, "block_size": 128, "warmup_steps": 5,
                 "probe_every": 10, "probe_questions": 4, "cooldown_steps": 5,  # the gated schedule, in miniature
                 "release": None},  # the shipped release is tiny's; micro always pre-trains
    "pool": {"size": 120, "sources": [{"kind": "procedural"}]},  # one source of pool.size (tiny mixes three, 3000)
    "difficulty": {"max_new_tokens": 8},
    "selection": {"size": 40},
    "sft": {"epochs": 1, "global_batch_size": 8, "per_device_batch_size": 8},
    "heldout": {"size": 16},
    "engine": {"unlimited_thinking_tokens": 48, "batch_size": 16},
    "evaluate": {"budgets": [8, 16], "base_max_new_tokens": 8,
                 "max_answer_tokens": 8,
                 # the compute-matched comparison and the extrapolation ablations have their own tests
                 "compute_matched": [], "wait_string_ablation": [], "num_waits_ablation": []},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def write_micro_project(dest: Path, with_code: bool = False) -> Path:
    """params.yaml (micro tiny profile) + dvc.yaml (+ the code DVC hashes) in ``dest``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tiny"] = _merge(params["tiny"], MICRO)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    if with_code:
        shutil.copytree(REPO / "components", dest / "components",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "releases", dest / "releases")  # a dependency of the base-model stage in dvc.yaml
    return dest
