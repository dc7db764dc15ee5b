"""The results page's tables in the MLflow run: ``results/results.md`` and one ``results/<table>.json`` per table
(MLflow's table artifacts, shown in the run's Artifacts and Evaluation views), and the compute axis
(:mod:`components.evaluation.compute_axis`) as the run's metrics and params:

* per point: ``compute_axis.<method>.<setting>.accuracy`` (and ``accuracy_low``/``accuracy_high``, its 95%
  interval) and ``compute_tokens`` (``compute_tokens_low``/``_high``), the setting written without ``=``
  (``compute_axis.majority_voting.N4.accuracy``);
* the best method at each compute level as series over compute (step: the level, rounded to a token):
  ``compute_best.accuracy``, ``compute_best.difference`` (against the runner-up), ``compute_best.p_value``,
  ``compute_best.significant`` (1 or 0), and the params ``compute_best.at_<level>`` (which point is best there);
* params ``compute_axis.interval``, ``compute_axis.test``, ``compute_axis.questions``, ``compute_axis.missing``;
* artifacts ``results/compute_axis.md`` and ``results/compute_matched.png`` (the plot with its intervals).

    log_results(run_id, load_results(paths))
"""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import mlflow
from mlflow.entities import Metric, Param

from components.evaluation.report import (
    compute_axis_markdown,
    plot_compute_matched_with_intervals,
    results_markdown,
    tables,
)

PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
METRICS_PER_BATCH = 1000
POINT_METRICS = {"accuracy": "accuracy", "accuracy_low": "accuracy_low", "accuracy_high": "accuracy_high",
                 "compute_tokens": "compute", "compute_tokens_low": "compute_low", "compute_tokens_high": "compute_high"}
BEST_SERIES = ("accuracy", "difference", "p_value", "significant")


def columns(rows: list[dict]) -> dict[str, list[Any]]:
    """Rows as MLflow's column dict (every column as long as the table; a missing cell is None; lists as text)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return {k: [cell(r.get(k)) for r in rows] for k in keys}


def metric_key(*parts: Any) -> str:
    """A metric or param name from its parts, joined with dots; characters MLflow refuses become ``_``."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", str(p).replace("=", "")) for p in parts)


def axis_metrics(axis: dict) -> list[tuple[str, float, int]]:
    """The compute axis as (name, value, step) metrics: each point's figures (step 0) and the best-at-each-level
    series (step: the compute level)."""
    out = [(metric_key("compute_axis", p["method"], p["setting"], name), float(p[field]), 0)
           for p in axis["points"] for name, field in POINT_METRICS.items() if p[field] is not None]
    for r in axis["best"]:
        step = round(r["compute_level"])
        out += [(f"compute_best.{name}", float(r[name]), step) for name in BEST_SERIES if r[name] is not None]
    return out


def axis_params(axis: dict) -> dict[str, str]:
    """What the axis's numbers mean, and which point is best at each compute level."""
    return {"compute_axis.interval": axis["interval"], "compute_axis.test": axis["test"],
            "compute_axis.questions": str(axis["questions"]),
            "compute_axis.missing": "; ".join(axis["missing"]) or "nothing",
            **{metric_key("compute_best", f"at_{i:02d}_{r['compute_level']:.2f}"):
               f"{r['method']} {r['setting']}" for i, r in enumerate(axis["best"])}}


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def log_compute_axis(client: mlflow.MlflowClient, run_id: str, results: dict) -> list[str]:
    """The compute axis's metrics, params and artifacts in the run; returns the artifact paths (none without a
    compute-matched comparison)."""
    axis: Optional[dict] = results.get("compute_axis")
    if not axis:
        return []
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, s) for k, v, s in axis_metrics(axis)]
    params = [Param(k, v[:6000]) for k, v in axis_params(axis).items()]
    for batch in _chunks(metrics, METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch)
    for batch in _chunks(params, PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch)
    client.log_text(run_id, "\n".join(compute_axis_markdown(axis)).rstrip() + "\n", "results/compute_axis.md")
    made = ["results/compute_axis.md"]
    if results["eval"].get("compute_matched"):
        with tempfile.TemporaryDirectory() as tmp:
            plot = Path(tmp) / "compute_matched.png"
            plot_compute_matched_with_intervals(results, plot)
            client.log_artifact(run_id, str(plot), "results")
        made.append("results/compute_matched.png")
    return made


def log_results(run_id: str, results: dict) -> list[str]:
    """Log the page, its tables and the compute axis to the run; returns the artifact paths."""
    client = mlflow.MlflowClient()
    client.log_text(run_id, results_markdown(results), "results/results.md")
    made = ["results/results.md"]
    for name, rows in tables(results).items():
        if rows:
            client.log_table(run_id, data=columns(rows), artifact_file=f"results/{name}.json")
            made.append(f"results/{name}.json")
    return made + log_compute_axis(client, run_id, results)
