"""Build the configured engine (the ``engine`` section) for a model directory or hub id.

    engine = engine_for(EngineConfig(), "float32", "models/tiny/sft")
"""
from __future__ import annotations

from typing import Optional

from components.config import EngineConfig
from components.inference.engines import build_engine


def engine_for(cfg: EngineConfig, dtype: str, model: str, batch_size: Optional[int] = None):
    extra = {"tensor_parallel_size": cfg.tensor_parallel_size} if cfg.backend == "vllm" else {}
    return build_engine(cfg.backend, str(model), dtype, batch_size=batch_size or cfg.batch_size,
                        unlimited_thinking_tokens=cfg.unlimited_thinking_tokens, **extra)
