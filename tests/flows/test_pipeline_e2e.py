"""One tiny end-to-end run of the Prefect flow (micro settings), checking every artefact."""
import json

import pytest

from tests.micro import write_micro_project


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    import os
    import subprocess

    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import s1_pipeline
    root = write_micro_project(tmp_path_factory.mktemp("e2e"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "micro project"]):  # runs record the commit
        subprocess.run([*git, *cmd], cwd=root, check=True, capture_output=True)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with prefect_test_harness():
            result = s1_pipeline(profile="tiny")
    finally:
        os.chdir(cwd)
    return root, result


def test_every_stage_wrote_its_outputs(pipeline_run):
    root, result = pipeline_run
    for rel in ["models/tiny/base/model.safetensors", "models/tiny/base/tokenizer.json",
                "models/tiny/sft/model.safetensors", "data/tiny/pool.jsonl", "data/tiny/traces.jsonl",
                "data/tiny/filtered.jsonl", "data/tiny/s1k.jsonl", "data/tiny/sft_tokens.jsonl",
                "data/tiny/eval_samples.jsonl", "metrics/tiny/eval.json", "plots/tiny/scaling.png",
                "metrics/tiny/mlflow_run.json"]:
        assert (root / rel).exists(), rel
    assert not list((root / "models/tiny").rglob("*.bin"))  # safetensors only
    report = json.loads((root / "metrics/tiny/filter_report.json").read_text())
    assert report["counts"]["pool"] == 120
    assert report["counts"]["after_quality"] <= 120


def test_sweep_metrics_and_budgets_respected(pipeline_run):
    root, result = pipeline_run
    ev = result["evaluate"]
    assert [p["budget"] for p in ev["points"]] == [8, 16]
    assert ev["control"] == 1.0
    samples = [json.loads(l) for l in (root / "data/tiny/eval_samples.jsonl").open()]
    assert len(samples) == 16 * 3
    for s in samples:
        if s["budget"] is not None:
            assert s["thinking_tokens"] <= s["budget"]


def test_models_load_like_hub_models(pipeline_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    root, _ = pipeline_run
    for d in ("base", "sft"):
        model = AutoModelForCausalLM.from_pretrained(root / "models/tiny" / d)
        tok = AutoTokenizer.from_pretrained(root / "models/tiny" / d)
        assert model.config.model_type == "qwen2"
        assert tok.convert_tokens_to_ids("<|im_start|>") != tok.unk_token_id


def test_mlflow_run_and_registered_model(pipeline_run):
    import mlflow
    from mlflow import MlflowClient
    root, result = pipeline_run
    info = result["register"]
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert {"control", "scaling", "performance", "accuracy_budget_8", "accuracy_budget_16",
            "base_accuracy"} <= set(run.data.metrics)
    assert run.data.params["evaluate.budgets"] == "[8, 16]"
    assert run.data.tags["profile"] == "tiny"
    arts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert "scaling.png" in arts and "eval.json" in arts
    version = client.get_model_version(info["registered_model"], str(info["model_version"]))
    assert version.run_id == info["run_id"]
    champion = client.get_model_version_by_alias(info["registered_model"], "champion")
    assert str(champion.version) == str(version.version) and info["champion"]
    assert champion.tags["champion_decision"].startswith("first version with performance=")
    assert len(client.get_metric_history(info["run_id"], "train/loss")) >= 2
    mlflow.set_tracking_uri(info["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{info['registered_model']}/{info['model_version']}")
    import pandas as pd
    out = model.predict(pd.DataFrame({"question": ["What is 12 + 30?"], "max_thinking_tokens": [5]}))
    assert out["thinking_tokens"][0] <= 5


def test_evaluate_stage_through_serve_with_seeds(pipeline_run):
    """The same stage, sweeping through the Ray Serve endpoint with two sampled seeds per question."""
    import os

    from components.config import load_config
    from components.paths import Paths
    from components.pipeline.registry import run_stage
    root, _ = pipeline_run
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = load_config("params.yaml", overrides=["evaluate.via=serve", "evaluate.seeds=[0, 1]",
                                                     "evaluate.temperature=1.0", "evaluate.task_limit=6"])
        report = run_stage("evaluate", cfg, Paths.for_profile("tiny"))
    finally:
        os.chdir(cwd)
    assert [p["budget"] for p in report["points"]] == [8, 16]
    assert report["control"] == 1.0
    s = report["scores"]["8"]
    assert s["seeds"] == 2 and s["samples_per_question"] == 2 and s["questions"] == 6 and "pass@2" in s
    prov = report["provenance"]
    assert prov["via"] == "serve" and prov["engine"] == "hf" and prov["model_hash"] == report["model_hash"]
    assert "transformers" in prov["engine_version"]


def test_evaluation_flow_alone(pipeline_run):
    import os

    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import stage_flow
    root, _ = pipeline_run
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with prefect_test_harness():
            out = stage_flow("s1-evaluate-only", ["evaluate"], "sweep only")(
                profile="tiny", overrides=["evaluate.method=wait_extension",
                                           "evaluate.wait_counts=[0, 1]"])
    finally:
        os.chdir(cwd)
    assert out["evaluate"]["method"] == "wait_extension"
    assert [p["budget"] for p in out["evaluate"]["points"]] == [0, 1]


def test_register_against_an_mlflow_server(pipeline_run, tmp_path, monkeypatch):
    """infra/mlflow/server.sh (SQLite backend, proxied artefacts) receives the run, the model and the alias."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlflow import MlflowClient

    from components.common.network import free_port
    from components.config import load_config
    from components.paths import Paths
    from components.tracking.register_stage import register_stage
    from tests.conftest import REPO
    from tests.flows.services import service

    root, _ = pipeline_run
    port = free_port()
    env = {**os.environ, "S1FLOW_BIN": str(Path(sys.executable).parent), "S1FLOW_MLFLOW_PORT": str(port),
           "S1FLOW_MLFLOW_DB": f"sqlite:///{tmp_path / 'server.db'}",
           "S1FLOW_MLFLOW_ARTIFACTS": str(tmp_path / "artifacts")}
    url = f"http://127.0.0.1:{port}"
    with service(["bash", str(REPO / "infra/mlflow/server.sh")], f"{url}/health", tmp_path / "mlflow.log", env):
        monkeypatch.chdir(root)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        cfg = load_config("params.yaml", "tiny")
        info = register_stage(cfg, Paths.for_profile("tiny"))
        client = MlflowClient(tracking_uri=url)
        run = client.get_run(info["run_id"])
        assert info["tracking_uri"] == url
        assert run.data.params["selection.strategy"] == "diversity" and "sft.learning_rate" in run.data.params
        assert {"control", "performance", "distill_cost_usd", "distill_done"} <= set(run.data.metrics)
        assert any(k.startswith("accuracy_budget_") for k in run.data.metrics)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        assert len(head) == 40 and run.data.tags["git_commit"] == head
        assert run.data.tags["dvc.data/tiny/s1k.jsonl"] and run.data.tags["dvc.models/tiny/base"].startswith("dir:")
        arts = {a.path for a in client.list_artifacts(info["run_id"])}
        assert {"scaling.png", "selection_report.png", "eval.json"} <= arts
        assert list((tmp_path / "artifacts").rglob("scaling.png"))  # stored by the server, not the client
        champion = client.get_model_version_by_alias("s1flow-tiny", "champion")
        assert str(champion.version) == str(info["model_version"])
        assert champion.tags["dataset_dvc_md5"] == run.data.tags["dvc.data/tiny/s1k.jsonl"]
        assert champion.tags["champion_decision"].startswith("first version with performance=")
