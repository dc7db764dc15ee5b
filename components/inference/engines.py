"""Engine registry: ``engine.backend`` names one; engines import lazily.

    engine = build_engine("hf", "models/tiny/sft", batch_size=64)
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

ENGINES: dict[str, str] = {
    "hf": "components.inference.hf_engine:HFEngine",
    "vllm": "components.inference.vllm_engine:VLLMEngine",
}


# Serving replicas want the async form where a backend has one (continuous batching, streaming, aborts).
SERVING_ENGINES: dict[str, str] = {**ENGINES, "vllm": "components.inference.vllm_engine:AsyncVLLMEngine"}

# The package each engine needs beyond the core install.
REQUIRES = {"vllm": "vllm"}


def engine_problem(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if name not in ENGINES:
        return f"{name!r} is not an engine; choose one of {sorted(ENGINES)}"
    need = REQUIRES.get(name)
    if need and importlib.util.find_spec(need) is None:
        return (f"{name!r} needs the {need} package: install the gpu extra (pip install -e .[gpu]) on a GPU "
                "machine, or use `make vllm-env` for the CPU build; or choose 'hf'")
    return None


def build_engine(name: str, model: str, dtype: str = "float32", serving: bool = False, **kwargs: Any):
    """``serving=True``: the async engine where the backend has one (its calls are coroutines)."""
    table = SERVING_ENGINES if serving else ENGINES
    if name not in table:
        raise ValueError(f"engine.backend: {name!r} is not available in this build; choose one of {sorted(table)}")
    module, cls = table[name].split(":")
    return getattr(importlib.import_module(module), cls).from_pretrained(model, dtype, **kwargs)
