"""`prefect deployment run` against a real Prefect server and worker on 127.0.0.1.

The micro pipeline is deployed from prefect.yaml with `s1flow deploy`,
a process worker picks it up, and a failure in the train task is resumed from that task.
The finished run's artifacts (results table, MLflow links, selection funnel) are read back
from the Prefect API.
"""
import json
import re
import shutil
import subprocess

import httpx
import pytest

from tests.conftest import REPO
from tests.support.micro import write_micro_project
from tests.support.services import BIN, prefect_server

pytestmark = pytest.mark.slow


def _run_deployment(name: str, env: dict, cwd, params: dict | None = None) -> tuple[str, str]:
    args = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-interval", "2"]
    for k, v in (params or {}).items():
        args += ["--param", f"{k}={json.dumps(v)}"]
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    flow_run = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
    state = httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run}").json()["state"]["type"]
    return flow_run, state


def _task_states(flow_run: str, env: dict) -> dict[str, str]:
    runs = httpx.post(f"{env['PREFECT_API_URL']}/task_runs/filter",
                      json={"flow_runs": {"id": {"any_": [flow_run]}}}).json()
    states: dict[str, str] = {}
    for r in sorted(runs, key=lambda r: r["expected_start_time"]):
        states[r["name"].rsplit("-", 1)[0]] = r["state"]["name"]
    return states


def _artifacts(flow_run: str, env: dict) -> dict[str, dict]:
    arts = httpx.post(f"{env['PREFECT_API_URL']}/artifacts/filter",
                      json={"artifacts": {"flow_run_id": {"any_": [flow_run]}}}).json()
    return {a["key"]: a for a in arts}


def _check_artifacts(flow_run: str, env: dict, project) -> None:
    """What the Artifacts tab of a finished pipeline run shows, as the API returns it."""
    arts = _artifacts(flow_run, env)
    assert set(arts) >= {"s1-results-micro", "s1-mlflow-run-micro", "s1-model-micro", "s1-selection-funnel-micro",
                         "s1-selection-domains-micro"}, sorted(arts)
    reg = json.loads((project / "metrics/micro/mlflow_run.json").read_text())
    ev = json.loads((project / "metrics/micro/eval.json").read_text())
    results = arts["s1-results-micro"]
    assert results["type"] == "markdown"
    for p in ev["points"]:  # one row per budget, for the method evaluated
        assert f"| {p['budget']} | {p['accuracy']:.1%} |" in results["data"]
    assert "## budget_forcing" in results["data"] and "| no budget |" in results["data"]
    assert f"| budget_forcing | {ev['control']:.1%} |" in results["data"] and reg["run_id"] in results["data"]
    run_link, model_link = arts["s1-mlflow-run-micro"], arts["s1-model-micro"]
    assert run_link["type"] == model_link["type"] == "markdown"  # Prefect 3 stores a link artifact as [text](url)
    assert f"#/experiments/{reg['experiment_id']}/runs/{reg['run_id']})" in run_link["data"]
    assert f"#/models/s1flow-micro/versions/{reg['model_version']})" in model_link["data"]
    funnel = arts["s1-selection-funnel-micro"]
    assert funnel["type"] == "table"
    rows = json.loads(funnel["data"])
    report = json.loads((project / "metrics/micro/selection_report.json").read_text())
    assert [r["step"] for r in rows] == ["pool", "after_quality", "after_decontamination", "after_difficulty",
                                         "selected"]  # pipeline order
    assert [r["questions"] for r in rows] == [report["funnel"][r["step"]] for r in rows]
    assert rows[0]["dropped"] == "" and rows[1]["dropped"] == rows[0]["questions"] - rows[1]["questions"]
    domains = json.loads(arts["s1-selection-domains-micro"]["data"])
    assert sum(r["selected"] for r in domains) == report["selected"]


def test_deployment_runs_on_a_worker_and_resumes_from_the_failed_task(tmp_path):
    project = write_micro_project(tmp_path / "project")
    shutil.copy(REPO / "prefect.yaml", project / "prefect.yaml")
    shutil.copytree(REPO / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "home").mkdir()
    with prefect_server(tmp_path / "home") as env:
        deployed = subprocess.run([str(BIN / "s1flow"), "deploy"], cwd=project, env=env, capture_output=True,
                                  text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        assert "deployment: s1-pipeline/micro" in deployed.stdout and "deployment: s1-train/s1-32b" in deployed.stdout
        limits = httpx.post(f"{env['PREFECT_API_URL']}/concurrency_limits/filter", json={}).json()
        assert {(c["tag"], c["concurrency_limit"]) for c in limits} >= {("s1flow-train", 1)}
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "s1flow-local"],
                                      cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # 1) the training step breaks (its DeepSpeed config is missing): the flow run fails at train
            broken = ["sft.deepspeed=always", "sft.deepspeed_config=missing/zero3.json"]
            run, state = _run_deployment("s1-pipeline/micro", env, project, {"overrides": broken, "retries": 0})
            states = _task_states(run, env)
            assert state == "FAILED", (tmp_path / "worker.log").read_text()[-3000:]
            assert states["train"] == "Failed" and "evaluate" not in states
            assert all(states[s] == "Completed" for s in ["base-model", "collect", "distill", "filter", "select",
                                                         "tokenize"])
            # 2) fixed: the rerun takes every finished stage from the persisted results, resumes at train
            run, state = _run_deployment("s1-pipeline/micro", env, project)
            states = _task_states(run, env)
            assert state == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
            assert all(states[s] == "Cached" for s in ["base-model", "collect", "distill", "filter", "select",
                                                      "tokenize"]), states
            assert all(states[s] == "Completed" for s in ["train", "evaluate", "register"]), states
            _check_artifacts(run, env, project)
            # 3) an output removed by hand is noticed: that stage and what follows it run again
            shutil.rmtree(project / "models/micro/sft")
            run, state = _run_deployment("s1-pipeline/micro", env, project)
            states = _task_states(run, env)
            assert state == "COMPLETED" and states["tokenize"] == "Cached" and states["train"] == "Completed"
            # 4) an ablation overwrites the selection; going back to the default must not trust its cached results
            run, state = _run_deployment("s1-pipeline/micro", env, project, {"overrides": ["selection.seed=9"]})
            assert state == "COMPLETED" and _task_states(run, env)["select"] == "Completed"
            ablation = (project / "data/micro/s1k.jsonl").read_text()
            run, state = _run_deployment("s1-pipeline/micro", env, project)
            states = _task_states(run, env)
            assert state == "COMPLETED" and states["filter"] == "Cached" and states["select"] == "Completed"
            assert (project / "data/micro/s1k.jsonl").read_text() != ablation
        finally:
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:  # a loaded machine: the worker's graceful shutdown is not under test
                worker.kill()
                worker.wait()
    for rel in ["models/micro/sft/model.safetensors", "metrics/micro/eval.json", "metrics/micro/mlflow_run.json"]:
        assert (project / rel).exists(), rel
