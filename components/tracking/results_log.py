"""The results page's tables in the MLflow run: ``results/results.md`` and one ``results/<table>.json`` per table
(MLflow's table artifacts, shown in the run's Artifacts and Evaluation views).

    log_results(run_id, load_results(paths))
"""
from __future__ import annotations

from typing import Any

import mlflow

from components.evaluation.report import results_markdown, tables


def columns(rows: list[dict]) -> dict[str, list[Any]]:
    """Rows as MLflow's column dict (every column as long as the table; a missing cell is None; lists as text)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return {k: [cell(r.get(k)) for r in rows] for k in keys}


def log_results(run_id: str, results: dict) -> list[str]:
    """Log the page and its tables to the run; returns the artifact paths."""
    client = mlflow.MlflowClient()
    client.log_text(run_id, results_markdown(results), "results/results.md")
    made = ["results/results.md"]
    for name, rows in tables(results).items():
        if rows:
            client.log_table(run_id, data=columns(rows), artifact_file=f"results/{name}.json")
            made.append(f"results/{name}.json")
    return made
