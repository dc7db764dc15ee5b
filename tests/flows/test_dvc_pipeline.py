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


def test_push_to_s3_then_a_fresh_clone_pulls_without_recomputing(repo, tmp_path, monkeypatch):
    """The DVC remote of .dvc/config on a moto S3 server: push, clone, pull, nothing to reproduce."""
    import boto3

    from tests.flows.services import moto_s3

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in creds.items():  # credentials only ever come from the environment
        monkeypatch.setenv(k, v)
    (repo / ".dvc/config").write_text((REPO / ".dvc/config").read_text())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    with moto_s3() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="s1flow-dvc")
        _run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint], repo)
        _run([*git, "add", "-A"], repo)
        _run([*git, "commit", "-qm", "pipeline"], repo)
        out = _run(["dvc", "push"], repo)
        assert re.search(r"\d+ files? pushed", out), out
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="s1flow-dvc").get("Contents", [])]
        assert keys and all(k.startswith("cache/files/md5/") for k in keys)
        assert "testing" not in (repo / ".dvc/config").read_text()  # no secrets in the committed config

        clone = tmp_path / "clone"
        _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        assert not (clone / "models/tiny/sft/model.safetensors").exists()
        _run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint], clone)
        _run(["dvc", "pull"], clone)
    for rel in ["models/tiny/sft/model.safetensors", "models/tiny/base/model.safetensors", "data/tiny/s1k.jsonl",
                "data/tiny/traces.jsonl", "data/tiny/eval_samples.jsonl"]:
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel
    out = _run(["dvc", "repro"], clone)
    assert _ran(out) == set() and "Data and pipelines are up to date" in out
