"""Run in the vLLM venv: do the vLLM names Ray's ray.data.llm vLLM stage uses resolve in this vLLM?

    python -m tests.support.vllm_api_check NAME_GROUP_JSON
NAME_GROUP_JSON: a list of groups, each a list of dotted alternatives (Ray tries them in turn).
Prints ``VLLM_API {"missing": [...], "vllm": version}``.
"""
from __future__ import annotations

import importlib
import json
import sys


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return True
        except AttributeError:
            return False
    return False


if __name__ == "__main__":
    import vllm
    groups = json.loads(sys.argv[1])
    missing = [group for group in groups if not any(resolves(name) for name in group)]
    print("VLLM_API " + json.dumps({"missing": missing, "vllm": vllm.__version__}))
