"""`dvc repro` runs the same stages, reruns nothing the second time, and only what a param change touches."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.micro import write_micro_project

BIN = str(Path(sys.executable).parent)


def _run(cmd, cwd):
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "S1FLOW_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = write_micro_project(tmp_path_factory.mktemp("dvc"), with_code=True)
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    return root


def test_first_repro_runs_every_stage(repo):
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == {"base-model", "collect", "distill", "filter", "select", "tokenize", "train",
                         "evaluate", "register"}
    assert (repo / "dvc.lock").exists()
    assert (repo / "models/tiny/sft/model.safetensors").exists()


def test_second_repro_runs_nothing(repo):
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == set()
    assert "Data and pipelines are up to date" in out


def test_param_change_reruns_only_dependent_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tiny"]["evaluate"]["budgets"] = [8, 12, 16]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == {"evaluate", "register"}
    params["tiny"]["sft"]["learning_rate"] = 0.001
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == {"train", "evaluate", "register"}


def test_dvc_plots_render(repo):
    out = _run(["dvc", "plots", "show", "--json"], repo)
    assert "scaling.jsonl" in out


def test_prefect_cache_keys_read_the_params_dvc_tracks():
    import yaml

    from components.stages import STAGE_PARAMS, STAGES
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(spec) == list(STAGES)
    for name, stage in spec.items():
        tracked = [p.removeprefix("${profile}.") for p in stage.get("params", []) if p != "profile"]
        assert tracked == STAGE_PARAMS[name], name
