"""Run a check module in the vLLM venv (`make vllm-env`; S1FLOW_VLLM_PYTHON) and read its JSON verdicts."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

VLLM_PYTHON = os.environ.get("S1FLOW_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")


def run_checks(module: str, args: list[str], marker: str) -> dict:
    """``python -m module *args`` in the vLLM venv; the verdicts it prints after ``marker``."""
    if not Path(VLLM_PYTHON).exists():
        if os.environ.get("CI"):
            pytest.fail(f"vLLM venv missing at {VLLM_PYTHON}: `make vllm-env` should have built it")
        pytest.skip("no vLLM venv (run `make vllm-env`)")
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([VLLM_PYTHON, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(f"{marker} ")), None)
    assert line, f"{module} did not report (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(line.removeprefix(f"{marker} "))
