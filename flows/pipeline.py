"""The s1 pipeline as a Prefect flow: one task per stage, nothing else.

Each task calls the same stage function ``dvc repro`` runs, so both produce
the same files. Config is validated once here, before any task starts. When the
run is what dvc.yaml describes, both keep one record: dvc.lock
(components/pipeline/dvc_record.py).

    python -m flows.pipeline            # or: s1flow run
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment as current_deployment

from components.common.raycluster import release_ray
from components.config import load_config
from components.data.hub_pins import require_pinned
from components.inference.methods.registry import hub_models
from components.paths import Paths
from components.pipeline.deployments import TRAIN_TAG, check_run_overrides  # TRAIN_TAG: one training at a time
from components.pipeline.dvc_record import finished_result, record_stage, unrecorded_reason
from components.pipeline.ledger import OutputLedger, outputs_signature, stage_cache_key
from components.pipeline.preflight import preflight
from components.pipeline.registry import STAGES, run_stage
from flows.artifacts import publish

# Groups of stages users run on their own (each is a deployment in prefect.yaml).
STAGE_GROUPS = {
    "distill": ["collect", "distill"],
    "curate": ["filter", "select", "tokenize"],
    "train": ["train"],
    "evaluate": ["evaluate", "register"],
}


def _cache_key(context, parameters: dict) -> str:
    return parameters["cache_token"]


def _finished_in_dvc(name: str, paths: Paths) -> Optional[dict]:
    """The stage's result when dvc.lock records it as up to date (a DVC error: None, the stage runs)."""
    logger = get_run_logger()
    try:
        result = finished_result(name, paths)
    except Exception as e:
        logger.warning("%s: DVC status failed, running the stage: %s: %s", name, type(e).__name__, e)
        return None
    if result is not None:
        logger.info("%s: up to date in dvc.lock; not run again (its result is its metrics file)", name)
    return result


@task(retries=1, retry_delay_seconds=5, persist_result=True, cache_key_fn=_cache_key)
def stage_task(name: str, params_path: str, profile: str, overrides: list[str], cache_token: str,
               dvc: bool = False) -> dict:
    """One stage. Its result persists under a key of (stage, params, code, upstream outputs): a rerun of
    the flow reuses every finished stage whose key and outputs are unchanged and resumes at the first
    one that is not (a failed one, or one whose outputs were removed or changed). With ``dvc`` (the run is
    what dvc.yaml describes) a stage dvc.lock records as up to date is not run either."""
    cfg = load_config(params_path, profile, overrides)
    paths = Paths.for_profile(cfg.name)
    if dvc and (result := _finished_in_dvc(name, paths)) is not None:
        return result
    return run_stage(name, cfg, paths)


def _record(name: str, paths: Paths) -> None:
    """Commit the finished stage to dvc.lock and the DVC cache; a DVC error is a warning, never a failed stage."""
    logger = get_run_logger()
    try:
        if record_stage(paths.root, name):
            logger.info("%s: recorded in dvc.lock", name)
    except Exception as e:
        logger.warning("%s: not recorded in dvc.lock: %s: %s", name, type(e).__name__, e)


def run_stages(stages: list[str], profile: Optional[str], params_path: str, overrides: Optional[list[str]],
               retries: int = 1, timeout_s: Optional[float] = None) -> dict:
    overrides = overrides or []
    cfg = load_config(params_path, profile, overrides)  # fail fast, before any stage runs
    require_pinned(cfg, stages, hub_models)  # every hub model and dataset these stages download, at a pinned commit
    preflight(cfg, stages)
    paths, results, order = Paths.for_profile(cfg.name), {}, list(STAGES)
    ledger, logger = OutputLedger(paths), get_run_logger()
    unrecorded = unrecorded_reason(Path(params_path), cfg.name, overrides, paths.root)
    if unrecorded:
        logger.info("dvc.lock: this run is not recorded, %s", unrecorded)
    last_on_ray = max((name for name in stages if STAGES[name].on_ray(cfg)), key=stages.index, default=None)
    for name in stages:
        i = order.index(name)  # the stage before, in pipeline order, as it is on disk now
        upstream = outputs_signature(order[i - 1], paths) if i else ""
        key = stage_cache_key(name, cfg, upstream)
        options = {"name": name, "tags": [TRAIN_TAG] if name == "train" else [], "retries": retries,
                   "timeout_seconds": timeout_s, "refresh_cache": ledger.stale(name, key)}
        results[name] = stage_task.with_options(**options)(name, params_path, cfg.name, overrides, key, not unrecorded)
        if not unrecorded:  # before the ledger and the next key read the outputs: committing relinks them
            _record(name, paths)
        ledger.record(name, key)
        if name == last_on_ray:  # nothing after it runs on Ray: stop what this process started (idle, it takes CPU)
            release_ray()
    results["profile"] = cfg.name
    logger.info("stages done: %s", ", ".join(stages))
    try:  # the Artifacts tab: results table, MLflow links, selection funnel
        logger.info("artifacts: %s", ", ".join(publish(paths, stages)) or "none")
    except Exception as e:  # never fail a finished pipeline over its summary
        logger.warning("artifacts not published: %s: %s", type(e).__name__, e)
    return results


def stage_flow(flow_name: str, stages: list[str], doc: str, extra_overrides: tuple[str, ...] = ()):
    """A Prefect flow running ``stages`` in order; every deployment in prefect.yaml points at one."""

    def run(profile: Optional[str] = None, params_path: str = "params.yaml", overrides: Optional[list[str]] = None,
            retries: int = 1, timeout_s: Optional[float] = None) -> dict:
        # a deployment run's own parameters may not redirect endpoints, keys, models or pins (prefect.yaml)
        check_run_overrides(flow_name, current_deployment.name, overrides or [], params_path)
        return run_stages(stages, profile, params_path, [*(overrides or []), *extra_overrides], retries, timeout_s)

    run.__doc__ = doc
    run.__name__ = flow_name.replace("-", "_")
    return flow(name=flow_name, log_prints=True)(run)


s1_pipeline = stage_flow("s1-pipeline", list(STAGES), "The whole pipeline, base model to registered model.")
s1_base_model = stage_flow("s1-base-model", ["base-model"], "Build (tiny) or record (hub) the base model.")
s1_distill = stage_flow("s1-distill", STAGE_GROUPS["distill"],
                        "Collect the pool and distill traces (resumable; rerun to finish failures).")
s1_curate = stage_flow("s1-curate", STAGE_GROUPS["curate"], "Filter, select s1K and tokenize.")
s1_train = stage_flow("s1-train", STAGE_GROUPS["train"], "SFT on the tokenized selection (one training at a time).")
s1_evaluate = stage_flow("s1-evaluate", STAGE_GROUPS["evaluate"],
                         "Evaluate the trained model (budget sweep) and log, register, promote it.")
s1_serve_eval = stage_flow("s1-serve-eval", STAGE_GROUPS["evaluate"],
                           "The evaluation sweep through the Ray Serve endpoint users call, then register.",
                           ("evaluate.via=serve",))


def summary_lines(result: dict) -> list[str]:
    from components.evaluation.report import interval  # lazy: the report reads numpy
    paths = Paths.for_profile(result["profile"])
    ev, reg = result["evaluate"], result["register"]

    def acc(x: float) -> str:  # with its 95% interval over the evaluation's questions (one sample each)
        iv = interval({}, x, ev.get("questions"))
        return f"{x:.1%}" if iv is None else f"{x:.1%} [{iv.low:.1%}, {iv.high:.1%}]"
    lines = [f"profile: {result['profile']}",
             f"base model accuracy (no thinking): {acc(ev['base_accuracy'])}"]
    for p in ev["points"]:
        lines.append(f"budget {p['budget']:>5} thinking tokens: accuracy {acc(p['accuracy'])} "
                     f"(avg {p['avg_thinking_tokens']:.1f} thinking tokens)")
    u = ev["unlimited"]
    lines.append(f"no budget: accuracy {acc(u['accuracy'])} (avg {u['avg_thinking_tokens']:.1f} thinking tokens)")
    lines.append(f"[low, high]: the 95% interval (exact Clopper-Pearson over {ev.get('questions')} questions)")
    lines += sampled_lines(ev, paths)
    scaling = "n/a" if ev["scaling"] is None else f"{ev['scaling']:.4f}"
    lines.append(f"control {ev['control']:.1%}  scaling {scaling}/token  performance {ev['performance']:.1%}")
    lines.append(f"scaling plot: {paths.plot('scaling.png')}")
    lines.append(f"metrics: {paths.metric('eval.json')}")
    lines.append(f"MLflow run {reg['run_id']} in experiment '{reg['experiment']}' ({reg['tracking_uri']}); "
                 f"model '{reg['registered_model']}' version {reg['model_version']}")
    lines.append(f"open the UI: mlflow ui --backend-store-uri {reg['tracking_uri']}")
    return lines


def sampled_lines(ev: dict, paths: Paths) -> list[str]:
    """The sampled protocol's avg@k and pass@k per budget, avg@k with its question-bootstrap interval (none when
    the run sampled nothing)."""
    sampled = ev.get("sampled")
    if not sampled:
        return []
    from components.evaluation.compare import read_samples  # lazy: the report reads numpy
    from components.evaluation.report import interval, sample_tables
    records = read_samples(paths.eval_samples, required=False) if paths.eval_samples.exists() else []
    samples, k, out = {"samples": sample_tables(records)}, sampled["k"], []
    for p in sampled["points"]:  # the interval the results page gives the same point
        iv = interval(samples, p["accuracy"], sampled["questions"], (ev.get("task"), sampled["method"], p["budget"]), k)
        where = "no budget" if p["budget"] is None else f"budget {p['budget']:>5}"
        spread = "" if iv is None else f" [{iv.low:.1%}, {iv.high:.1%}]"
        out.append(f"sampled, {where}: avg@{k} {p['accuracy']:.1%}{spread}, pass@{k} {p['pass_at_k']:.1%} "
                   f"(avg {p['avg_thinking_tokens']:.1f} thinking tokens)")
    out.append(f"sampled: {k} samples of each of {sampled['questions']} questions at temperature "
               f"{sampled['temperature']}, top-p {sampled['top_p']}; [low, high] from resampling questions")
    return out


if __name__ == "__main__":
    print(json.dumps(summary_lines(s1_pipeline()), indent=1))
