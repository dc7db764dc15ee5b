"""What moves reasoning scores between runs, recorded with every evaluation."""
from __future__ import annotations

import platform

from components.common.grading import GRADER_VERSION
from components.config import EngineConfig, EvaluateConfig


def engine_version(engine: str) -> str:
    if engine == "vllm":
        from components.inference.vllm_engine import vllm_version
        return f"vllm {vllm_version()}"
    import torch
    import transformers
    return f"transformers {transformers.__version__}, torch {torch.__version__}"


def provenance(evaluate: EvaluateConfig, engine: EngineConfig, dtype: str, model_hash: str) -> dict:
    ev = evaluate
    return {"engine": engine.backend, "engine_version": engine_version(engine.backend), "dtype": dtype,
            "tensor_parallel_size": engine.tensor_parallel_size, "batch_size": engine.batch_size,
            "unlimited_thinking_tokens": engine.unlimited_thinking_tokens, "seed": ev.seed,
            "seeds": ev.seeds, "temperature": ev.temperature, "top_p": ev.top_p, "via": ev.via,
            "max_answer_tokens": ev.max_answer_tokens, "final_answer_prefix": ev.final_answer_prefix,
            "model_hash": model_hash, "grader_version": GRADER_VERSION, "python": platform.python_version()}
