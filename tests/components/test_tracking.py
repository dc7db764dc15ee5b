"""The champion alias follows the params-chosen metric, with the reason recorded."""
import mlflow
from mlflow import MlflowClient

from components.tracking.mlflow_run import flatten, promote_if_better


def test_champion_moves_only_to_a_better_version(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_registered_model("m")
    decisions = []
    for perf in (0.5, 0.4, 0.7):
        with mlflow.start_run() as run:
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
    import json

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
