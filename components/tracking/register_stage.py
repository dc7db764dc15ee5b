"""Stage entry point of the tracking package: one MLflow run for the whole pipeline, the model registered.

It declares the whole profile: the run records every parameter of every stage, and the evaluation's
provenance (``eval.json`` → ``provenance``, with the whole profile's params digest) as ``provenance.json`` and
a few ``eval.*`` tags.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlflow

from components.common.redaction import redacted
from components.common.run_environment import git_label
from components.config import ProfileConfig
from components.data.base_model_readiness import base_model_warning
from components.evaluation.provenance import params_digest
from components.evaluation.report import load_results
from components.paths import Paths
from components.records import write_json
from components.tracking.lineage import input_hashes, selected_dataset
from components.tracking.mlflow_run import log_pipeline_run
from components.tracking.results_log import log_results


def provenance_record(ev: dict, profile: ProfileConfig) -> dict:
    """The evaluation's provenance with the profile's name and the digest of its whole validated config."""
    return redacted({**(ev.get("provenance") or {}), "profile": profile.name,
                     "profile_params_digest": params_digest(profile)})


def provenance_tags(record: dict) -> dict[str, str]:
    """``eval.<field>`` for each field of the record that is one value; the commit, CPU and GPUs in one tag each
    (the nested rest is in ``provenance.json``)."""
    hw = record.get("hardware") or {}
    gpus = f"{hw.get('gpu_count')} x {hw['gpu']}, driver {hw.get('gpu_driver')}" if hw.get("gpu") else "none"
    return {**{f"eval.{k}": ", ".join(map(str, v)) if isinstance(v, list) else str(v)
               for k, v in record.items() if not isinstance(v, dict) and v is not None},
            "eval.git_commit": git_label(record.get("git") or {}),
            **({"eval.gpu": gpus, "eval.cpu": f"{hw.get('cpu_count')} x {hw.get('cpu')}"} if hw else {})}


def register_stage(profile: ProfileConfig, paths: Paths) -> dict:
    """Log params, metrics, plots and lineage to MLflow; register the model and promote the champion."""
    ev = json.loads(paths.metric("eval.json").read_text())
    record = provenance_record(ev, profile)
    train = json.loads(paths.metric("train.json").read_text())
    metrics = {f"accuracy_budget_{b}": a for b, a in ev["accuracy_by_budget"].items()}
    metrics.update(control=ev["control"], scaling=ev["scaling"], performance=ev["performance"],
                   base_accuracy=ev["base_accuracy"], accuracy_unlimited=ev["unlimited"]["accuracy"],
                   train_loss=train["train_loss"], sft_seconds=train["seconds"],
                   **{f"sft_{k}": train[k] for k in ("tokens_per_second", "padding_efficiency", "mfu")
                      if train.get(k) is not None})
    distill = paths.metric("distill_report.json")
    if distill.exists():
        d = json.loads(distill.read_text())
        metrics.update({f"distill_{k}": d[k] for k in ("done", "failed", "calls", "prompt_tokens",
                                                       "completion_tokens", "cost_usd")})
    artifacts = [paths.plot("scaling.png"), paths.plot("compute_matched.png"), paths.metric("eval.json"),
                 paths.eval_samples,  # the per-question samples `s1flow compare RUN_A RUN_B` reads
                 paths.metric("filter_report.json"),
                 paths.metric("selection_report.json"), paths.plot("selection_report.png"), paths.metric("train.json"),
                 paths.metric("collect_report.json"), paths.metric("distill_report.json")]  # those that exist
    data = input_hashes(paths.root, [str(p.relative_to(paths.root)) for p in
                                     (paths.pool, paths.traces, paths.selected, paths.sft_tokens, paths.heldout,
                                      paths.base_model, paths.sft_model)])
    tags = {"model_hash": ev.get("model_hash", ""), **{f"dvc.{k}": v for k, v in data.items()},
            **provenance_tags(record)}
    dataset = str(paths.selected.relative_to(paths.root))
    weights = str(paths.sft_model.relative_to(paths.root))
    version_tags = {"dataset": dataset, "dataset_dvc_md5": data.get(dataset, ""), "weights": weights,
                    "weights_dvc_md5": data.get(weights, ""),  # `dvc get`/`dvc pull` at this hash: the same weights
                    "selection.strategy": profile.selection.strategy}
    history = Path(train.get("work_dir", paths.sft_work)) / "loss_history.json"
    steps = json.loads(history.read_text()) if history.exists() else []
    heldout = str(paths.heldout.relative_to(paths.root))
    datasets = [d for d in [selected_dataset(paths)] if d] + (
        [{"path": str(paths.heldout), "name": paths.heldout.stem, "dvc_md5": data[heldout], "context": "evaluation"}]
        if heldout in data else [])
    info = log_pipeline_run(profile, paths.root, metrics, artifacts, paths.sft_model, tags=tags, step_metrics=steps,
                            version_tags=version_tags, training_run_id=train.get("mlflow_run_id"), datasets=datasets,
                            warning=base_model_warning(paths))
    mlflow.MlflowClient().log_dict(info["run_id"], record, "provenance.json")
    info["results_artifacts"] = log_results(info["run_id"], load_results(paths))  # the results page's tables
    write_json(paths.metric("mlflow_run.json"), info)
    return info
