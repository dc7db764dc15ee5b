"""`dvc repro` runs the same stages, reruns nothing the second time, and only what a param change touches;
an ablation runs as a DVC experiment (`dvc exp run -S`) and `dvc exp show` reads its metrics back."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.support.micro import write_micro_project

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
    for key, value in (("user.name", "t"), ("user.email", "t@t")):
        _run(["git", "config", key, value], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "micro project"], root)  # experiments are based on a commit
    return root


def _experiments(shown: list) -> dict[str, dict]:
    """``dvc exp show --json``: {experiment name: {"params": ..., "metrics": ...}} under every baseline."""
    out = {}
    for baseline in shown:
        for exp_range in baseline.get("experiments") or []:
            for rev in exp_range["revs"]:
                out[rev.get("name") or exp_range.get("name") or rev["rev"]] = rev["data"]
    return out


def test_first_repro_runs_every_stage(repo):
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == {"base-model", "collect", "distill", "filter", "select", "tokenize", "train",
                         "evaluate", "register"}
    assert (repo / "dvc.lock").exists()
    assert (repo / "models/micro/sft/model.safetensors").exists()


def test_second_repro_runs_nothing(repo):
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == set()
    assert "Data and pipelines are up to date" in out


def test_param_change_reruns_only_dependent_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["micro"]["evaluate"]["budgets"] = [8, 12, 16]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], repo)
    assert _ran(out) == {"evaluate", "register"}


def test_ablation_as_a_dvc_experiment(repo):
    """The random-selection ablation as a DVC experiment: only what the selection feeds reruns, and
    `dvc exp show` has its params and metrics."""
    out = _run(["dvc", "exp", "run", "-S", "micro.selection.strategy=random", "-n", "random-selection"], repo)
    assert _ran(out) == {"select", "tokenize", "train", "evaluate", "register"}
    exps = _experiments(json.loads(_run(["dvc", "exp", "show", "--json"], repo)))
    data = exps["random-selection"]
    assert data["params"]["params.yaml"]["data"]["micro"]["selection"]["strategy"] == "random"
    ev = data["metrics"]["metrics/micro/eval.json"]["data"]  # DVC keeps numbers and dicts of them, drops lists
    in_workspace = json.loads((repo / "metrics/micro/eval.json").read_text())  # the workspace holds the experiment
    for key in ("control", "performance", "accuracy_by_budget", "base_accuracy"):
        assert ev[key] == in_workspace[key], key
    assert ev.get("scaling") == in_workspace["scaling"]  # null when no budget pair differs
    assert data["metrics"]["metrics/micro/selection_report.json"]["data"]["strategy"] == "random"


def test_dvc_plots_render(repo):
    """`dvc plots show` renders the scaling curve, the training loss per step and the selection funnel/domains."""
    shown = json.loads(_run(["dvc", "plots", "show", "--json"], repo))
    assert not shown.get("errors"), shown["errors"]  # e.g. a format DVC cannot read (it reads no JSONL)
    plots = {path: p[0]["content"] for path, p in shown["data"].items() if p}
    assert set(plots) == {"plots/micro/scaling.json", "plots/micro/train_loss.json", "plots/micro/selection_funnel.json",
                          "plots/micro/selection_domains.json"}, list(shown["data"])
    values = {path: json.dumps(content) for path, content in plots.items()}
    steps = json.loads((repo / "plots/micro/train_loss.json").read_text())
    assert len(steps) >= 2 and all(f'"loss": {r["loss"]}' in values["plots/micro/train_loss.json"] for r in steps)
    funnel = plots["plots/micro/selection_funnel.json"]
    assert funnel["mark"]["type"] == "bar" and [v["step"] for v in funnel["data"]["values"]][0] == "pool"
    assert '"accuracy"' in values["plots/micro/scaling.json"] and '"domain"' in values["plots/micro/selection_domains.json"]


def test_push_to_s3_then_a_fresh_clone_pulls_without_recomputing(repo, tmp_path, monkeypatch):
    """The DVC remote of .dvc/config on a moto S3 server: push, clone, pull, nothing to reproduce."""
    import boto3

    from tests.support.services import moto_s3

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
        assert not (clone / "models/micro/sft/model.safetensors").exists()
        _run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint], clone)
        _run(["dvc", "pull"], clone)
    for rel in ["models/micro/sft/model.safetensors", "models/micro/base/model.safetensors", "data/micro/s1k.jsonl",
                "data/micro/traces.jsonl", "data/micro/eval_samples.jsonl"]:
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel
    out = _run(["dvc", "repro"], clone)
    assert _ran(out) == set() and "Data and pipelines are up to date" in out
