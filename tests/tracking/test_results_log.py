"""The compute axis in the MLflow run: its figures as metrics and params, its tables and plot as artifacts
(local sqlite tracking store; the hand-worked comparison of tests/support/compute_axis.py)."""
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.evaluation.compute_axis import INTERVAL, TEST
from components.evaluation.report import load_results
from components.paths import Paths
from components.tracking.results_log import log_results, metric_key
from tests.support.compute_axis import tiny_samples, write_tiny_comparison

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report"


@pytest.fixture
def logged(tmp_path):
    """The fixture run with the tiny comparison, logged to a fresh run; yields (client, run id, artifact paths)."""
    shutil.copytree(FIXTURE / "metrics", tmp_path / "metrics")
    paths = Paths.for_profile("tiny", tmp_path)
    write_tiny_comparison(paths, tiny_samples())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri)
        experiment = client.create_experiment("axis-test", artifact_location=(tmp_path / "artifacts").as_uri())
        run_id = client.create_run(experiment).info.run_id
        made = log_results(run_id, load_results(paths))
        yield client, run_id, made
    finally:
        mlflow.set_tracking_uri(None)


def test_each_point_is_a_metric_with_its_interval(logged):
    client, run_id, _ = logged
    m = client.get_run(run_id).data.metrics
    assert metric_key("compute_axis", "budget_forcing", "B=10", "accuracy") == "compute_axis.budget_forcing.B10.accuracy"
    assert (m["compute_axis.budget_forcing.B10.accuracy"], m["compute_axis.budget_forcing.B10.accuracy_low"],
            m["compute_axis.budget_forcing.B10.accuracy_high"]) == (0.125, 0.0, 0.375)
    assert (m["compute_axis.budget_forcing.B20.compute_tokens"], m["compute_axis.budget_forcing.B20.compute_tokens_low"],
            m["compute_axis.budget_forcing.B20.compute_tokens_high"]) == (21.0, 20.0, 23.0)
    assert m["compute_axis.majority_voting.N2.accuracy"] == 0.375


def test_the_best_method_at_each_level_is_a_series_over_compute(logged):
    client, run_id, _ = logged
    series = {name: [(h.step, h.value) for h in sorted(client.get_metric_history(run_id, f"compute_best.{name}"),
                                                       key=lambda h: h.step)]
              for name in ("accuracy", "p_value", "significant")}
    assert series["accuracy"] == [(10, 0.125), (12, 0.25), (21, 1.0), (24, 1.0)]
    assert series["p_value"] == [(12, 1.0), (21, 0.03125), (24, 0.0625)]  # level 10: no runner-up to test
    assert series["significant"] == [(12, 0.0), (21, 1.0), (24, 0.0)]
    p = client.get_run(run_id).data.params
    assert (p["compute_best.at_02_21_00"], p["compute_best.at_01_12_00"]) == ("budget_forcing B=20", "majority_voting N=1")
    assert (p["compute_axis.interval"], p["compute_axis.test"], p["compute_axis.questions"],
            p["compute_axis.missing"]) == (INTERVAL, TEST, "8", "nothing")


def test_the_tables_and_plot_are_artifacts(logged):
    client, run_id, made = logged
    listed = {f.path for f in client.list_artifacts(run_id, "results")}
    assert {"results/compute_axis.md", "results/compute_axis.json", "results/compute_best.json",
            "results/compute_matched.png"} <= listed and set(made) == listed
    page = mlflow.artifacts.load_text(f"runs:/{run_id}/results/compute_axis.md")
    assert "| 21.0 | budget_forcing B=20 | 100.0% [100.0%, 100.0%] | majority_voting N=1 | 25.0% |" in page
    table = mlflow.artifacts.load_dict(f"runs:/{run_id}/results/compute_best.json")
    col = table["columns"].index
    assert [(r[col("compute_level")], r[col("significant")]) for r in table["data"]] == [
        (10.0, None), (12.0, False), (21.0, True), (24.0, False)]
