"""The server on vLLM's AsyncLLM, for real, in the vLLM venv (see tests/support/vllm_serve_checks.py)."""
import pytest

from tests.support.vllm_serve_checks import CHECKS
from tests.support.vllm_venv import run_checks


@pytest.fixture(scope="module")
def verdicts(tiny_model_dir):
    return run_checks("tests.support.vllm_serve_checks", ["--model", str(tiny_model_dir)], "SERVE_CHECKS")


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_vllm_serving(verdicts, name):
    assert verdicts.get(name) == "ok", verdicts.get(name, f"{name} did not run")
