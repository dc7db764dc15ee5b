"""The s1 pipeline as a Prefect flow: one task per stage, nothing else.

Each task calls the same stage function ``dvc repro`` runs, so both produce
the same files. Config is validated once here, before any task starts.

    python -m flows.pipeline            # or: s1flow run
"""
from __future__ import annotations

import json
from typing import Optional

from prefect import flow, task

from components.config import load_config
from components.preflight import preflight
from components.stages import STAGES, Paths, run_stage


@task(retries=1, retry_delay_seconds=5)
def stage_task(name: str, params_path: str, profile: str, overrides: list[str]) -> dict:
    cfg = load_config(params_path, profile, overrides)
    return run_stage(name, cfg, Paths.for_profile(cfg.name))


@flow(name="s1-pipeline", log_prints=True)
def s1_pipeline(profile: Optional[str] = None, params_path: str = "params.yaml",
                overrides: Optional[list[str]] = None) -> dict:
    overrides = overrides or []
    cfg = load_config(params_path, profile, overrides)  # fail fast, before any stage runs
    preflight(cfg, STAGES)
    results = {}
    for name in STAGES:
        results[name] = stage_task.with_options(name=name)(name, params_path, cfg.name, overrides)
    results["profile"] = cfg.name
    return results


@flow(name="s1-evaluate", log_prints=True)
def s1_evaluate(profile: Optional[str] = None, params_path: str = "params.yaml",
                overrides: Optional[list[str]] = None, and_register: bool = True) -> dict:
    """Evaluate the trained model (sweep; through Serve with evaluate.via=serve) and log/register it."""
    overrides = overrides or []
    cfg = load_config(params_path, profile, overrides)
    stages = ["evaluate", "register"] if and_register else ["evaluate"]
    preflight(cfg, stages)
    results = {name: stage_task.with_options(name=name)(name, params_path, cfg.name, overrides) for name in stages}
    results["profile"] = cfg.name
    return results


def summary_lines(result: dict) -> list[str]:
    paths = Paths.for_profile(result["profile"])
    ev, reg = result["evaluate"], result["register"]
    lines = [f"profile: {result['profile']}",
             f"base model accuracy (no thinking): {ev['base_accuracy']:.1%}"]
    for p in ev["points"]:
        lines.append(f"budget {p['budget']:>5} thinking tokens: accuracy {p['accuracy']:.1%} "
                     f"(avg {p['avg_thinking_tokens']:.1f} thinking tokens)")
    u = ev["unlimited"]
    lines.append(f"no budget: accuracy {u['accuracy']:.1%} (avg {u['avg_thinking_tokens']:.1f} thinking tokens)")
    scaling = "n/a" if ev["scaling"] is None else f"{ev['scaling']:.4f}"
    lines.append(f"control {ev['control']:.1%}  scaling {scaling}/token  performance {ev['performance']:.1%}")
    lines.append(f"scaling plot: {paths.plot('scaling.png')}")
    lines.append(f"metrics: {paths.metric('eval.json')}")
    lines.append(f"MLflow run {reg['run_id']} in experiment '{reg['experiment']}' ({reg['tracking_uri']}); "
                 f"model '{reg['registered_model']}' version {reg['model_version']}")
    lines.append(f"open the UI: mlflow ui --backend-store-uri {reg['tracking_uri']}")
    return lines


if __name__ == "__main__":
    print(json.dumps(summary_lines(s1_pipeline()), indent=1))
