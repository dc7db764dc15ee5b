"""The server on vLLM's AsyncLLM, for real, in the vLLM venv (see tests/serve/vllm_serve_checks.py)."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.serve.vllm_serve_checks import CHECKS

VLLM_PYTHON = os.environ.get("S1FLOW_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")


@pytest.fixture(scope="module")
def verdicts(tiny_model_dir):
    if not Path(VLLM_PYTHON).exists():
        if os.environ.get("CI"):
            pytest.fail(f"vLLM venv missing at {VLLM_PYTHON}: `make vllm-env` should have built it")
        pytest.skip("no vLLM venv (run `make vllm-env`)")
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([VLLM_PYTHON, "-m", "tests.serve.vllm_serve_checks", "--model", str(tiny_model_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("SERVE_CHECKS ")), None)
    assert line, f"vLLM serve checks did not report (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(line.removeprefix("SERVE_CHECKS "))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_vllm_serving(verdicts, name):
    assert verdicts.get(name) == "ok", verdicts.get(name, f"{name} did not run")
