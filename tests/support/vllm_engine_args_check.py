"""Builds vLLM's model config from engine kwargs, as ray.data.llm's vLLM stage does (``AsyncEngineArgs(**kw)``).

``python -m tests.support.vllm_engine_args_check MODEL_DIR '{"max_model_len": 32768}'`` prints
``ENGINE_ARGS {"ok": true, "max_model_len": 32768}`` or ``{"ok": false, "error": "..."}``: whether vLLM accepts the
settings (its max_model_len check against the model's positions included). Used by
tests/curation/test_ray_llm_students.py.
"""
from __future__ import annotations

import json
import sys


def main(model: str, kwargs_json: str) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    # what ray.data.llm's vLLM stage keeps for itself (task_type) or this one-CPU check cannot have (TP)
    kwargs = {k: v for k, v in json.loads(kwargs_json).items() if k not in ("task_type", "tensor_parallel_size")}
    try:
        config = AsyncEngineArgs(model=model, skip_tokenizer_init=True, **kwargs).create_model_config()
        verdict = {"ok": True, "max_model_len": config.max_model_len}
    except Exception as e:  # vLLM's refusal is the verdict
        verdict = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    print("ENGINE_ARGS " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
