"""The vLLM engines (offline ``LLM`` and the serving ``AsyncLLM``) pass the same conformance checks as HF.

vLLM's CPU build lives in its own venv (`make vllm-env`, pointed to by
S1FLOW_VLLM_PYTHON); the checks run there in one process (one start per engine).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.engine_checks import CHECKS

VLLM_PYTHON = os.environ.get("S1FLOW_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")


@pytest.fixture(scope="module")
def verdicts(tiny_model_dir):
    if not Path(VLLM_PYTHON).exists():
        if os.environ.get("CI"):
            pytest.fail(f"vLLM venv missing at {VLLM_PYTHON}: `make vllm-env` should have built it")
        pytest.skip("no vLLM venv (run `make vllm-env`)")
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([VLLM_PYTHON, "-m", "tests.engine_checks", "--engine", "vllm", "--model",
                           str(tiny_model_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("ENGINE_CHECKS ")), None)
    assert line, f"vLLM checks did not report (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(line.removeprefix("ENGINE_CHECKS "))


@pytest.mark.parametrize("engine", ["vllm", "vllm_async"])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_vllm_engine(verdicts, engine, name):
    key = f"{engine}:{name}"
    assert verdicts.get(key) == "ok", verdicts.get(key, f"{key} did not run")
