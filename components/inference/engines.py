"""Engine registry: ``evaluate.engine`` names one; engines import lazily.

    engine = build_engine("hf", "models/tiny/sft", batch_size=64)
"""
from __future__ import annotations

import importlib
from typing import Any

ENGINES: dict[str, str] = {
    "hf": "components.inference.hf_engine:HFEngine",
    "vllm": "components.inference.vllm_engine:VLLMEngine",
}


def engine_available(name: str) -> bool:
    return name in ENGINES


def build_engine(name: str, model: str, dtype: str = "float32", **kwargs: Any):
    if name not in ENGINES:
        raise ValueError(f"evaluate.engine: {name!r} is not available in this build; choose one of {sorted(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls).from_pretrained(model, dtype, **kwargs)
