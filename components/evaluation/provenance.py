"""What moves reasoning scores between runs, recorded with every evaluation (``eval.json`` → ``provenance``).

The record names the code (git commit of the project checkout, and whether tracked files were changed), the
config (``params_digest``: sha256 of the canonical JSON of the validated sections the evaluation reads, secrets
masked), the protocol (``paper``: greedy, temperature 0, as s1 reports; ``sampled``: any other temperature),
seeds and sampling, the engine, library versions and hardware, the weights (``model_hash``), the grader,
every task's questions (``datasets``: a hub dataset at its pinned commit, a local file by its sha256), and the
base model's release date (``base_model_released``, ``model.released``: the page flags older tasks by it).

    record = provenance(evaluate, engine, model, serve, model_hash, paths)
"""
from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel

from components.common.grading import GRADER_VERSION
from components.common.hashing import file_digest
from components.common.redaction import redacted
from components.common.run_environment import git_state, hardware, library_versions
from components.config import EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.data.tasks import TASKS
from components.paths import Paths

# the profile sections an evaluation reads (the evaluate stage's declared params), digested together
EVALUATION_SECTIONS = ("engine", "evaluate", "model", "serve")


def engine_version(engine: str) -> str:
    if engine == "vllm":
        from components.inference.vllm_engine import vllm_version
        return f"vllm {vllm_version()}"
    import torch
    import transformers
    return f"transformers {transformers.__version__}, torch {torch.__version__}"


def params_digest(params: Union[BaseModel, Mapping[str, Any]]) -> str:
    """sha256 of ``params`` as canonical JSON (keys sorted, no whitespace), secret-named fields and URL
    credentials masked: the same for the same values whatever their order."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else {
        k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in params.items()}
    canonical = json.dumps(redacted(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def protocol(evaluate: EvaluateConfig) -> str:
    """The main sweep's decoding: ``paper`` (greedy, temperature 0: s1's reported setting) or ``sampled`` (the
    ``sampled`` protocol's own part is recorded under ``protocols`` and ``sampled``)."""
    return "paper" if evaluate.temperature == 0 else "sampled"


def _local(path: Path, root: Path) -> dict:
    full = path if path.is_absolute() else root / path
    try:
        shown = str(full.resolve().relative_to(root.resolve()))
    except ValueError:
        shown = str(full)
    return {"source": shown, "sha256": file_digest(full) if full.is_file() else None}


def dataset_revisions(evaluate: EvaluateConfig, paths: Paths) -> dict[str, dict]:
    """Each task's questions: a local file (``heldout``, ``evaluate.task_files``) by path and sha256, a hub
    dataset by name, configs, split and pinned commit (``revision``)."""
    out: dict[str, dict] = {}
    for name in evaluate.tasks:
        if name == "heldout":
            out[name] = _local(paths.heldout, paths.root)
        elif name in evaluate.task_files:
            out[name] = _local(Path(evaluate.task_files[name]), paths.root)
        elif name in TASKS:
            spec = TASKS[name]
            out[name] = {"source": spec.hf_dataset, "configs": [c for c in spec.hf_configs if c],
                         "split": spec.split, "revision": spec.revision}
    return out


def provenance(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, serve: ServeConfig,
               model_hash: str, paths: Paths) -> dict:
    ev = evaluate
    sections = {"engine": engine, "evaluate": evaluate, "model": model, "serve": serve}
    return {"protocol": protocol(ev), "engine": engine.backend, "engine_version": engine_version(engine.backend),
            "dtype": model.dtype, "tensor_parallel_size": engine.tensor_parallel_size,
            "batch_size": engine.batch_size, "unlimited_thinking_tokens": engine.unlimited_thinking_tokens,
            "seed": ev.seed, "seeds": ev.seeds, "temperature": ev.temperature, "top_p": ev.top_p, "via": ev.via,
            "protocols": list(ev.protocols),
            "sampled": ev.sampled.model_dump(mode="json") if "sampled" in ev.protocols else None,
            "max_answer_tokens": ev.max_answer_tokens, "final_answer_prefix": ev.final_answer_prefix,
            "model_hash": model_hash, "grader_version": GRADER_VERSION, "python": platform.python_version(),
            "git": git_state(), "params_digest": params_digest(sections), "params_sections": list(EVALUATION_SECTIONS),
            "libraries": library_versions(), "hardware": hardware(), "datasets": dataset_revisions(ev, paths),
            "base_model_released": model.released and model.released.isoformat()}
