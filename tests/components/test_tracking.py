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
