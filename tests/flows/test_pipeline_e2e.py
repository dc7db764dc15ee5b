"""One end-to-end run of the Prefect flow on the micro profile, checking every artefact."""
import json
from pathlib import Path

import pytest

from tests.support.in_project import in_project
from tests.support.micro import write_micro_project


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
    # MLflow samples system metrics every 10 s by default: longer than the micro training
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"
    try:
        with in_project(root), prefect_test_harness(server_startup_timeout=180):  # a loaded machine starts it slowly
            result = s1_pipeline(profile="micro")
    finally:
        os.environ.pop("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", None)
    import ray
    result["ray_left_running"] = ray.is_initialized()  # distill and filter started it; the flow released it after
    return root, result


def test_every_stage_wrote_its_outputs(pipeline_run):
    root, result = pipeline_run
    for rel in ["models/micro/base/model.safetensors", "models/micro/base/tokenizer.json",
                "models/micro/sft/model.safetensors", "data/micro/pool.jsonl", "data/micro/traces.jsonl",
                "data/micro/filtered.jsonl", "data/micro/s1k.jsonl", "data/micro/sft_tokens.jsonl",
                "data/micro/eval_samples.jsonl", "metrics/micro/eval.json", "plots/micro/scaling.png",
                "metrics/micro/mlflow_run.json"]:
        assert (root / rel).exists(), rel
    assert not list((root / "models/micro").rglob("*.bin"))  # safetensors only
    report = json.loads((root / "metrics/micro/filter_report.json").read_text())
    assert report["counts"]["pool"] == 120
    assert report["counts"]["after_quality"] <= 120


def test_ray_is_released_after_the_last_stage_on_it(pipeline_run):
    """distill and filter ran on a local Ray; train, evaluate and register do not, so the flow stopped it after
    the filter (an idle Ray keeps ~6% of a core busy)."""
    assert pipeline_run[1]["ray_left_running"] is False


def test_sweep_metrics_and_budgets_respected(pipeline_run):
    root, result = pipeline_run
    ev = result["evaluate"]
    ev_seed = json.loads((root / "metrics/micro/eval.json").read_text())["provenance"]["seed"]
    assert [p["budget"] for p in ev["points"]] == [8, 16]
    assert ev["control"] == 1.0
    samples = [json.loads(l) for l in (root / "data/micro/eval_samples.jsonl").open()]
    greedy = [s for s in samples if s["method"] == "budget_forcing"]
    assert len(greedy) == 16 * 3
    # the sampled protocol: 8 questions, 2 seeded samples each, at budget 16 and without a budget
    sampled = [s for s in samples if s["method"] == "budget_forcing[sampled]"]
    assert len(sampled) == len(samples) - len(greedy) == 8 * 2 * 2
    # every (sample, question) its own seed: row j * 8 + i of each budget's call
    assert {(s["seed"], s["budget"]) for s in sampled} == {(ev_seed + r, b) for r in range(16) for b in (16, None)}
    assert [p["budget"] for p in ev["sampled"]["points"]] == [16, None] and ev["sampled"]["k"] == 2
    for s in samples:
        if s["budget"] is not None:
            assert s["thinking_tokens"] <= s["budget"]


def test_models_load_like_hub_models(pipeline_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    root, _ = pipeline_run
    for d in ("base", "sft"):
        model = AutoModelForCausalLM.from_pretrained(root / "models/micro" / d)
        tok = AutoTokenizer.from_pretrained(root / "models/micro" / d)
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
    assert run.data.tags["profile"] == "micro"
    arts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert "scaling.png" in arts and "eval.json" in arts
    version = client.get_model_version(info["registered_model"], str(info["model_version"]))
    assert version.run_id == info["run_id"]
    champion = client.get_model_version_by_alias(info["registered_model"], "champion")
    assert str(champion.version) == str(version.version) and info["champion"]
    assert champion.tags["champion_decision"].startswith("first version with performance=")
    assert len(client.get_metric_history(info["run_id"], "train/loss")) >= 2
    assert champion.tags["weights_dvc_md5"].startswith("dir:") and champion.tags["weights"] == "models/micro/sft"
    mlflow.set_tracking_uri(info["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{info['registered_model']}/{info['model_version']}")
    import pandas as pd
    out = model.predict(pd.DataFrame({"question": ["What is 12 + 30?"], "max_thinking_tokens": [5]}))
    assert out["thinking_tokens"][0] <= 5
    mlflow.set_tracking_uri(None)


def test_training_streamed_into_the_run_the_register_stage_completed(pipeline_run):
    """Live loss/lr/grad-norm/tokens-per-second and system metrics went into the run the train stage opened;
    the register stage completed that same run; the selected dataset is its input (name, DVC md5, rows)."""
    from mlflow import MlflowClient
    root, result = pipeline_run
    info = result["register"]
    assert info["completed_training_run"] and info["training_run_id"] == info["run_id"] == result["train"]["mlflow_run_id"]
    assert json.loads((root / "metrics/micro/train.json").read_text())["mlflow_run_id"] == info["run_id"]
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    steps = [m.step for m in client.get_metric_history(info["run_id"], "train/loss")]
    assert len(steps) >= 2 and steps == sorted(set(steps))  # streamed once per log step, not logged again
    assert {"train/learning_rate", "train/grad_norm", "train/tokens_per_second"} <= set(run.data.metrics)
    assert run.data.metrics["train/tokens_per_second"] > 0
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    s1k = inputs["s1k"]
    assert s1k.dataset.digest == run.data.tags["dvc.data/micro/s1k.jsonl"][:36]
    assert json.loads(s1k.dataset.profile)["num_rows"] == 40
    assert {t.key: t.value for t in s1k.tags}["mlflow.data.context"] == "training"
    assert "heldout" in inputs
    loss = json.loads((root / "plots/micro/train_loss.json").read_text())
    assert [r["step"] for r in loss] == steps  # the DVC plot holds the same curve


def test_champion_loads_and_serves_outside_the_repo(pipeline_run, tmp_path):
    """The registered model carries its code (code_paths): a fresh interpreter that cannot import the repo
    loads models:/NAME@champion and predicts with per-row budgets; `mlflow models serve` answers /invocations."""
    import os
    import subprocess
    import sys
    import sysconfig

    import httpx

    from components.common.network import free_port
    from tests.support.services import service
    _, result = pipeline_run
    info = result["register"]
    uri = f"models:/{info['registered_model']}@champion"
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` execs the uvicorn on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": info["tracking_uri"], "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    port = free_port()
    serve = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    rows = [{"question": "What is 12 + 30?", "max_thinking_tokens": 4, "min_thinking_tokens": 0, "num_waits": 0,
             "max_answer_tokens": 8},
            {"question": "What is 7 * 8?", "max_thinking_tokens": 12, "min_thinking_tokens": 12, "num_waits": 1,
             "max_answer_tokens": 8}]
    with service(serve, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env=env, cwd=tmp_path):
        # python -S: no site hooks, so not the editable install of this repo; only the libraries on PYTHONPATH
        script = (
            "import importlib.util, json, sys\n"
            "assert importlib.util.find_spec('components') is None, 'the repo is importable'\n"
            "import mlflow.pyfunc, pandas as pd\n"
            f"model = mlflow.pyfunc.load_model({uri!r})\n"
            f"out = model.predict(pd.DataFrame({rows!r}))\n"
            "import components\n"
            "print(json.dumps({'components': components.__file__, 'rows': out.to_dict('records'),\n"
            "                  'inputs': [c.name for c in model.metadata.get_input_schema().inputs]}))\n")
        clean = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               env={**env, "PYTHONPATH": sysconfig.get_paths()["purelib"]}, timeout=600)
        assert clean.returncode == 0, clean.stderr[-3000:]
        loaded = json.loads(clean.stdout.strip().splitlines()[-1])
        served = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": rows}, timeout=120)
    assert served.status_code == 200, served.text
    from tests.conftest import REPO
    assert not loaded["components"].startswith(str(REPO)) and "/artifacts/code/components/" in loaded["components"]
    assert loaded["inputs"] == ["question", "max_thinking_tokens", "min_thinking_tokens", "num_waits",
                                "max_answer_tokens"]
    for out in (loaded["rows"], served.json()["predictions"]):
        assert out[0]["thinking_tokens"] <= 4 and out[1]["thinking_tokens"] == 12  # each row its own budget
        assert set(out[0]) == {"answer", "thinking", "thinking_tokens", "waits_used", "hit_budget"}


def test_evaluate_stage_through_serve_with_seeds(pipeline_run):
    """The same stage, sweeping through the Ray Serve endpoint with two sampled seeds per question."""

    from components.config import load_config
    from components.paths import Paths
    from components.pipeline.registry import run_stage
    root, _ = pipeline_run
    with in_project(root):
        cfg = load_config("params.yaml", overrides=["evaluate.via=serve", "evaluate.seeds=[0, 1]",
                                                     "evaluate.temperature=1.0", "evaluate.task_limit=6"])
        report = run_stage("evaluate", cfg, Paths.for_profile("micro"))
    assert [p["budget"] for p in report["points"]] == [8, 16]
    assert report["control"] == 1.0
    s = report["scores"]["8"]
    assert s["seeds"] == 2 and s["samples_per_question"] == 2 and s["questions"] == 6 and "pass@2" in s
    prov = report["provenance"]
    assert prov["via"] == "serve" and prov["engine"] == "hf" and prov["model_hash"] == report["model_hash"]
    assert "transformers" in prov["engine_version"]


def test_evaluation_flow_alone(pipeline_run):

    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import stage_flow
    root, _ = pipeline_run
    with in_project(root), prefect_test_harness(server_startup_timeout=180):  # a loaded machine starts it slowly
        out = stage_flow("s1-evaluate-only", ["evaluate"], "sweep only")(
            profile="micro", overrides=["evaluate.method=wait_extension", "evaluate.methods.wait_extension.waits=[0, 1]",
                                        "evaluate.protocols=[paper]"])  # wait extension sweeps waits: nothing to sample
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
    from tests.support.services import service

    root, _ = pipeline_run
    port = free_port()
    env = {**os.environ, "S1FLOW_BIN": str(Path(sys.executable).parent), "S1FLOW_MLFLOW_PORT": str(port),
           "S1FLOW_MLFLOW_DB": f"sqlite:///{tmp_path / 'server.db'}",
           "S1FLOW_MLFLOW_ARTIFACTS": str(tmp_path / "artifacts")}
    url = f"http://127.0.0.1:{port}"
    with service(["bash", str(REPO / "infra/mlflow/server.sh")], f"{url}/health", tmp_path / "mlflow.log", env):
        monkeypatch.chdir(root)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        cfg = load_config("params.yaml", "micro")
        info = register_stage(cfg, Paths.for_profile("micro"))
        client = MlflowClient(tracking_uri=url)
        run = client.get_run(info["run_id"])
        assert info["tracking_uri"] == url
        assert run.data.params["selection.strategy"] == "diversity" and "sft.learning_rate" in run.data.params
        assert {"control", "performance", "distill_cost_usd", "distill_done"} <= set(run.data.metrics)
        assert any(k.startswith("accuracy_budget_") for k in run.data.metrics)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        assert len(head) == 40 and run.data.tags["git_commit"] == head
        assert run.data.tags["dvc.data/micro/s1k.jsonl"] and run.data.tags["dvc.models/micro/base"].startswith("dir:")
        arts = {a.path for a in client.list_artifacts(info["run_id"])}
        assert {"scaling.png", "selection_report.png", "eval.json"} <= arts
        assert list((tmp_path / "artifacts").rglob("scaling.png"))  # stored by the server, not the client
        champion = client.get_model_version_by_alias("s1flow-micro", "champion")
        assert str(champion.version) == str(info["model_version"])
        assert champion.tags["dataset_dvc_md5"] == run.data.tags["dvc.data/micro/s1k.jsonl"]
        assert champion.tags["champion_decision"].startswith("first version with performance=")
