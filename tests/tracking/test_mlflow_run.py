"""MLflow: the champion alias, redaction, the training run the register stage completes."""
import json

import mlflow
from mlflow import MlflowClient

from components.tracking.mlflow_run import flatten, promote_if_better
from tests.conftest import REPO

REPORT_METRICS = REPO / "tests" / "fixtures" / "report" / "metrics" / "tiny"


def test_champion_moves_only_to_a_better_version(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_registered_model("m")
    experiment = client.create_experiment("champion-test")  # explicit: never the process's active experiment
    decisions = []
    for perf in (0.5, 0.4, 0.7):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metric("performance", perf)
        v = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id).version
        decisions.append(promote_if_better(client, "m", v, "performance", perf))
    assert [d["champion"] for d in decisions] == [True, False, True]
    assert str(client.get_model_version_by_alias("m", "champion").version) == "3"
    assert "does not beat champion v1" in client.get_model_version("m", "2").tags["champion_decision"]
    mlflow.set_tracking_uri(None)


def test_flatten_params():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}


def test_redact_masks_userinfo_and_secret_query_values():
    from components.tracking.mlflow_run import redact
    assert redact("https://alice:hunter2@gw.example/v1?key=AIzaX&model=m&token=t0k") == \
        "https://***@gw.example/v1?key=***&model=m&token=***"
    assert redact("postgresql://u:pw@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert redact("s3://b/k?X-Amz-Signature=abc&X-Amz-Credential=def&part=1") == \
        "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&part=1"
    assert redact("https://api.openai.com/v1") == "https://api.openai.com/v1" and redact(3) == 3


def test_logged_run_carries_no_secret(tmp_path):
    """A config whose URLs carry credentials: params, tags and the returned info hold none of them."""

    from components.config import parse_profile
    from components.tracking.mlflow_run import log_pipeline_run
    secrets = ["hunter2", "AIzaSECRETKEY", "tok-987", "sk-live-42"]
    cfg = parse_profile({
        "teacher": {"base_url": "https://alice:hunter2@gateway.example/v1beta/openai/?key=AIzaSECRETKEY",
                    "extra_body": {"api_key": "sk-live-42"}},
        "domain": {"base_url": "https://gw.example/v1/?alt=json&token=tok-987"},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "redact",
                     "registered_model": "redact-m"}}, "tiny")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    try:
        info = log_pipeline_run(cfg, tmp_path, {"performance": 0.5}, [], model_dir,
                                tags={"endpoint": "https://bob:hunter2@serve.example/v1", "eval.contaminated": "True"})
        run = MlflowClient(cfg.tracking.tracking_uri).get_run(info["run_id"])
    finally:
        mlflow.set_tracking_uri(None)
    logged = json.dumps({"params": run.data.params, "tags": run.data.tags, "info": info})
    assert not [s for s in secrets if s in logged]
    assert run.data.params["teacher.base_url"] == "https://***@gateway.example/v1beta/openai/?key=***"
    assert run.data.params["domain.base_url"] == "https://gw.example/v1/?alt=json&token=***"
    assert run.data.params["teacher.extra_body.api_key"] == "***"
    assert run.data.params["teacher.api_key_env"] == "OPENAI_API_KEY"  # a variable's name is no secret
    assert run.data.tags["endpoint"] == "https://***@serve.example/v1" and run.data.tags["contaminated"] == "true"


def test_training_streams_into_its_run_and_register_completes_it(tiny_model_dir, tiny_engine, tmp_path, monkeypatch,
                                                                 capsys):
    """The plain launcher inside the pipeline's training run: live loss/lr/grad-norm/tokens-per-second per step,
    the selection as the run's dataset, plain progress lines off a TTY (no tqdm carriage returns); the register
    stage then completes that run, and a second registration of the same training gets its own linked run."""
    import os

    from components.config import PoolConfig, SFTConfig, TeacherConfig, parse_profile
    from components.data.pool import generate_pool
    from components.distill.teachers import ProgrammaticTeacher
    from components.formatting import tokenize_dataset
    from components.paths import Paths
    from components.records import write_jsonl
    from components.tracking.mlflow_run import TRAINING_RUN_TAG, log_pipeline_run
    from components.tracking.training_run import train_in_run
    from components.training.live_metrics import RUN_ENV
    from components.training.sft import train_sft

    qs = generate_pool(PoolConfig(size=8, max_difficulty=2, malformed_fraction=0))
    rows = [(q.id, q.question, t.thinking, t.answer) for q in qs for t in [ProgrammaticTeacher(TeacherConfig()).solve(q)]]
    examples = tokenize_dataset(tiny_engine.tokenizer, rows, block_size=512)[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = parse_profile({"tracking": {"tracking_uri": uri, "experiment": "live", "registered_model": "live-m"}}, "tiny")
    paths = Paths.for_profile("tiny", root=tmp_path)
    paths.selected.parent.mkdir(parents=True)
    write_jsonl(paths.selected, [{"id": q.id, "question": q.question} for q in qs])
    monkeypatch.delenv("S1FLOW_NO_PROGRESS", raising=False)
    from transformers.utils import logging as hf_logging

    from components.common.progress import quiet_foreign_bars
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
                "RAY_DATA_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(var, "1")  # what quiet_foreign_bars sets, undone after the test
    quiet_foreign_bars()  # as importing flows/ (s1flow, the Prefect flows) does first
    sft = SFTConfig(epochs=1, global_batch_size=2, per_device_batch_size=2, deepspeed="never")
    try:
        result = train_in_run(lambda: train_sft(sft, tiny_model_dir, examples, tmp_path / "sft", tmp_path / "work"),
                              cfg, paths)
        client = MlflowClient(uri)
        run_id = result["mlflow_run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["s1flow.stage"] == "train"
        assert RUN_ENV not in os.environ  # the run reached the trainer through the environment, only meanwhile
        loss = client.get_metric_history(run_id, "train/loss")
        assert [m.step for m in loss] == list(range(1, result["steps"] + 1))  # every logging step, as it trained
        assert {"train/learning_rate", "train/grad_norm", "train/tokens_per_second"} <= set(run.data.metrics)
        assert run.data.metrics["train/tokens_per_second"] > 0 and "train/mfu" not in run.data.metrics  # no GPU
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "s1k" and json.loads(dataset.dataset.profile)["num_rows"] == len(qs)
        err = capsys.readouterr().err
        assert f"sft steps: {result['steps']}/{result['steps']} (100%)" in err and "\r" not in err

        infos = [log_pipeline_run(cfg, tmp_path, {"performance": p}, [], tmp_path / "sft", tags={},
                                  step_metrics=[{"step": 1, "loss": 9.0}], training_run_id=run_id) for p in (0.5, 0.6)]
        assert infos[0]["run_id"] == run_id and infos[0]["completed_training_run"]
        assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == [m.value for m in loss]
        assert infos[1]["run_id"] != run_id and not infos[1]["completed_training_run"]
        linked = client.get_run(infos[1]["run_id"])
        assert linked.data.tags[TRAINING_RUN_TAG] == run_id and run_id in linked.data.tags["mlflow.note.content"]
        assert client.get_metric_history(infos[1]["run_id"], "train/loss")[0].value == 9.0  # the history, logged
    finally:
        mlflow.set_tracking_uri(None)
        hf_logging.enable_progress_bar()


def _register_without_pyfunc(monkeypatch):
    """The model version registered straight from the run (the pyfunc packaging has tests of its own)."""
    from types import SimpleNamespace

    from components.tracking import mlflow_run

    def register(model_dir, registered_model):
        client, run = MlflowClient(), mlflow.active_run()
        if not client.search_registered_models(f"name = '{registered_model}'"):
            client.create_registered_model(registered_model)
        version = client.create_model_version(registered_model, f"runs:/{run.info.run_id}/model", run.info.run_id)
        return SimpleNamespace(registered_model_version=version.version)
    monkeypatch.setattr(mlflow_run, "log_model_version", register)


def test_an_unready_base_model_warns_on_the_registered_run(tmp_path, monkeypatch):
    """pretrain.allow_unready went on with a base model that missed its probe: the register stage's run carries
    the warning as a tag, in its description, as warning.txt and on the results page it logs; so does the model
    version."""
    import shutil

    from components.config import parse_profile
    from components.paths import Paths
    from components.records import write_json
    from components.tracking.mlflow_run import WARNING_TAG
    from components.tracking.register_stage import register_stage

    _register_without_pyfunc(monkeypatch)

    warning = "base model not ready: its pre-training (8 steps, pretrain.seed 3, model.seed 4) never passed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = parse_profile({"tracking": {"tracking_uri": uri, "experiment": "unready", "registered_model": "unready-m"}},
                        "tiny")
    paths = Paths.for_profile("tiny", tmp_path)
    shutil.copytree(REPORT_METRICS, paths.metric("eval.json").parent)
    write_json(paths.metric("train.json"), {"train_loss": 0.5, "seconds": 1.0})
    write_json(paths.metric("base_model.json"), {"source": "pretrained", "ready": False, "warning": warning})
    paths.sft_model.mkdir(parents=True)
    (paths.sft_model / "config.json").write_text("{}")
    try:
        info = register_stage(cfg, paths)
        client = MlflowClient(uri)
        run = client.get_run(info["run_id"])
        page = client.download_artifacts(info["run_id"], "results/results.md", str(tmp_path / "dl"))
        text = client.download_artifacts(info["run_id"], "warning.txt", str(tmp_path / "dl"))
        version = client.get_model_version("unready-m", str(info["model_version"]))
    finally:
        mlflow.set_tracking_uri(None)
    assert run.data.tags[WARNING_TAG] == warning and warning in run.data.tags["mlflow.note.content"]
    assert open(text).read().strip() == warning and f"**WARNING:** {warning}" in open(page).read()
    assert version.tags[WARNING_TAG] == warning

    write_json(paths.metric("base_model.json"), {"source": "release", "ready": True})  # a ready model: no warning
    try:
        run = MlflowClient(uri).get_run(register_stage(cfg, paths)["run_id"])
    finally:
        mlflow.set_tracking_uri(None)
    assert WARNING_TAG not in run.data.tags and "mlflow.note.content" not in run.data.tags
