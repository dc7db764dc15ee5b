"""The evaluation's provenance in the MLflow run: provenance.json (the whole record) and a few eval.* tags."""
import json

from components.config import load_config
from components.evaluation.provenance import params_digest
from components.tracking.register_stage import provenance_record, provenance_tags
from tests.conftest import REPO

EVAL = REPO / "tests" / "fixtures" / "report" / "metrics" / "tiny" / "eval.json"


def test_the_record_adds_the_whole_profiles_digest_and_the_tags_stay_flat():
    cfg = load_config(REPO / "params.yaml", profile="tiny")
    ev = json.loads(EVAL.read_text())
    record = provenance_record(ev, cfg)
    assert record["profile"] == "tiny" and record["profile_params_digest"] == params_digest(cfg)
    assert {k: record[k] for k in ev["provenance"]} == ev["provenance"]
    tags = provenance_tags(record)
    assert tags["eval.git_commit"] == "1" * 40
    assert tags["eval.protocol"] == "paper" and tags["eval.params_digest"] == "2" * 64
    assert tags["eval.gpu"] == "none" and tags["eval.cpu"] == "2 x Example CPU @ 2.00GHz"
    assert tags["eval.contaminated"] == "False"  # log_pipeline_run tags contaminated runs from it
    assert not {"eval.git", "eval.libraries", "eval.hardware", "eval.datasets"} & set(tags)  # in provenance.json
    gpu = {**record, "hardware": {**record["hardware"], "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 8,
                                  "gpu_driver": "550.54.15"}}
    assert provenance_tags(gpu)["eval.gpu"] == "8 x NVIDIA H100 80GB HBM3, driver 550.54.15"
    assert provenance_tags({"engine": "hf"}) == {"eval.engine": "hf", "eval.git_commit": "unknown"}


def test_the_register_stage_logs_provenance_json_to_its_run(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from components.paths import Paths
    from components.records import write_json
    from components.tracking import register_stage as stage
    cfg = load_config(REPO / "params.yaml", profile="tiny")
    paths = Paths.for_profile("tiny", tmp_path)
    paths.metric("eval.json").parent.mkdir(parents=True, exist_ok=True)
    paths.metric("eval.json").write_text(EVAL.read_text())
    write_json(paths.metric("train.json"), {"train_loss": 0.5, "seconds": 1.0})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    seen = {}
    try:
        experiment = MlflowClient(uri).create_experiment("prov", artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:  # stands in for the pipeline's run (no model)
            pass

        def log_pipeline_run(profile, root, metrics, artifacts, model_dir, tags, **kw):
            seen.update(tags, artifacts=artifacts)
            return {"run_id": run.info.run_id}
        monkeypatch.setattr(stage, "log_pipeline_run", log_pipeline_run)
        monkeypatch.setattr(stage, "log_results", lambda run_id, results: [])
        stage.register_stage(cfg, paths)
        logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/provenance.json")
    finally:
        mlflow.set_tracking_uri(None)
    assert logged == provenance_record(json.loads(EVAL.read_text()), cfg)
    assert seen["eval.git_commit"] == logged["git"]["commit"] and seen["eval.protocol"] == "paper"
    assert paths.eval_samples in seen["artifacts"]  # the per-question samples `s1flow compare RUN_A RUN_B` reads
