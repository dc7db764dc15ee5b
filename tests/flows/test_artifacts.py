"""What the Prefect artifacts say, from the files the stages write (the deployment test reads them back
from a real server: tests/flows/test_prefect_deployment.py)."""
from components.paths import Paths
from flows.artifacts import funnel_rows, mlflow_links, results_markdown

EVAL = {
    "task": "heldout", "method": "budget_forcing", "questions": 16, "base_accuracy": 0.0625,
    "points": [{"budget": 8, "accuracy": 0.25, "avg_thinking_tokens": 8.0},
               {"budget": 16, "accuracy": 0.5, "avg_thinking_tokens": 15.5}],
    "unlimited": {"accuracy": 0.5625, "avg_thinking_tokens": 30.25},
    "control": 1.0, "scaling": 0.03125, "performance": 0.5,
    "methods": {
        "budget_forcing": {"points": [{"budget": 8, "accuracy": 0.25, "avg_thinking_tokens": 8.0},
                                      {"budget": 16, "accuracy": 0.5, "avg_thinking_tokens": 15.5}],
                           "control": 1.0, "scaling": 0.03125, "performance": 0.5},
        "wait_extension": {"points": [{"budget": 0, "accuracy": 0.375, "avg_thinking_tokens": 12.0}],
                           "control": 0.5, "scaling": None, "performance": 0.375, "value_label": "W="}},
}
REG = {"run_id": "abc123", "experiment": "s1flow-tiny", "experiment_id": "7", "registered_model": "s1flow-tiny",
       "model_version": "3", "champion": True, "champion_reason": "first version with performance=0.5000",
       "tracking_uri": "sqlite:////tmp/mlflow.db"}


def test_results_table_per_budget_and_per_method():
    md = results_markdown(EVAL, REG, Paths.for_profile("tiny"))
    assert "| 8 | 25.0% | 8.0 |" in md and "| 16 | 50.0% | 15.5 |" in md and "| no budget | 56.2% | 30.2 |" in md
    assert "## wait_extension" in md and "| waits | accuracy |" in md and "| 0 | 37.5% | 12.0 |" in md
    assert "| budget_forcing | 100.0% | 0.0312 | 50.0% |" in md and "| wait_extension | 50.0% | n/a | 37.5% |" in md
    assert "Base model (no thinking): **6.2%**" in md and "version 3 (champion)" in md


def test_mlflow_links_point_at_the_ui(monkeypatch):
    monkeypatch.delenv("S1FLOW_MLFLOW_UI", raising=False)
    assert mlflow_links(REG) == {"run": "http://127.0.0.1:5000/#/experiments/7/runs/abc123",
                                 "model": "http://127.0.0.1:5000/#/models/s1flow-tiny/versions/3"}
    server = {**REG, "tracking_uri": "http://mlflow.internal:5000/"}
    assert mlflow_links(server)["run"] == "http://mlflow.internal:5000/#/experiments/7/runs/abc123"
    monkeypatch.setenv("S1FLOW_MLFLOW_UI", "https://mlflow.example")
    assert mlflow_links(REG)["model"] == "https://mlflow.example/#/models/s1flow-tiny/versions/3"


def test_funnel_in_pipeline_order_with_what_each_step_dropped():
    report = {"funnel": {"after_decontamination": 90, "after_difficulty": 60, "after_quality": 100, "pool": 120,
                         "selected": 40}}  # as selection_report.json stores it: keys sorted
    assert funnel_rows(report) == [
        {"step": "pool", "questions": 120, "dropped": ""}, {"step": "after_quality", "questions": 100, "dropped": 20},
        {"step": "after_decontamination", "questions": 90, "dropped": 10},
        {"step": "after_difficulty", "questions": 60, "dropped": 30}, {"step": "selected", "questions": 40, "dropped": 20}]
