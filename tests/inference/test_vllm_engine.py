"""The vLLM engines (offline ``LLM`` and the serving ``AsyncLLM``) pass the same conformance checks as HF.

vLLM's CPU build lives in its own venv (`make vllm-env`, pointed to by
S1FLOW_VLLM_PYTHON); the checks run there in one process (one start per engine).
"""
import pytest

from tests.support.engine_checks import CHECKS
from tests.support.vllm_venv import run_checks


@pytest.fixture(scope="module")
def verdicts(tiny_model_dir):
    return run_checks("tests.support.engine_checks", ["--engine", "vllm", "--model", str(tiny_model_dir)], "ENGINE_CHECKS")


@pytest.mark.parametrize("engine", ["vllm", "vllm_async"])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_vllm_engine(verdicts, engine, name):
    key = f"{engine}:{name}"
    assert verdicts.get(key) == "ok", verdicts.get(key, f"{key} did not run")
