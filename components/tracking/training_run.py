"""The MLflow run a training streams into, opened by the pipeline around the train stage.

The train stage receives only ``sft`` and ``model`` and its package never imports this one,
so the run reaches it through the environment: :data:`RUN_ENV` (the run id) and
:data:`URI_ENV` (the tracking URI), which also travel to Ray Train workers. Rank 0's
:class:`components.training.live_metrics.MLflowLive` callback logs loss, learning rate, grad
norm, tokens/s and (GPU) MFU into it as training goes; MLflow's system metrics (CPU, memory,
GPU) are sampled in it meanwhile; the selected dataset is its ``mlflow.log_input``.

The run id is written into ``train.json`` (``mlflow_run_id``); the register stage then
completes that same run with params, evaluation metrics and the model
(:func:`components.tracking.mlflow_run.log_pipeline_run`). A later re-evaluation of the same
training (the train stage cached) gets a new run tagged ``s1flow.training_run_id``.

    result = train_in_run(lambda: train_stage(...), cfg, paths)     # components/pipeline/registry.py
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import mlflow

from components.config import ProfileConfig
from components.paths import Paths
from components.records import write_json
from components.tracking.lineage import log_dataset, selected_dataset
from components.tracking.mlflow_run import git_commit, tracking_uri
from components.training.live_metrics import RUN_ENV, URI_ENV

STAGE_TAG = "s1flow.stage"


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_in_run(run: Callable[[], dict], cfg: ProfileConfig, paths: Paths) -> dict:
    """Run the train stage inside an MLflow run (system metrics on), exported to the trainer by environment.
    Tracking trouble never stops a training: without a run it trains without live metrics."""
    uri = tracking_uri(cfg.tracking, paths.root)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(cfg.tracking.experiment)
        active = mlflow.start_run(run_name=f"{cfg.name}-{cfg.selection.strategy}-{cfg.selection.size}",
                                  log_system_metrics=True,
                                  tags={"profile": cfg.name, "git_commit": git_commit(paths.root), STAGE_TAG: "train",
                                        "selection.strategy": cfg.selection.strategy})
    except Exception as e:  # an unreachable tracking server must not cost a training
        print(f"MLflow: no live run ({type(e).__name__}: {e}); training without live metrics")
        return run()
    run_id, status = active.info.run_id, "FAILED"
    try:
        if (ds := selected_dataset(paths)) is not None:
            log_dataset(**ds)
        print(f"MLflow: training streams into run {run_id} ({uri})")
        with _env({RUN_ENV: run_id, URI_ENV: uri}):
            result = run()
        status = "FINISHED"
    finally:
        mlflow.end_run(status)
    result = {**result, "mlflow_run_id": run_id}
    train_json = paths.metric("train.json")
    if train_json.exists():  # the register stage (also a later `s1flow stage register`) finds the run here
        write_json(train_json, {**json.loads(train_json.read_text()), "mlflow_run_id": run_id})
    return result
