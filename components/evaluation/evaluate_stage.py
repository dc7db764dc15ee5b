"""Stage entry point of the evaluation package: the budget sweep on every task in ``evaluate.tasks``.

Before anything runs, the stage checks that the training data was decontaminated
against every task it reports (``decontaminated_against`` in the filter report):
it refuses otherwise, or with ``evaluate.allow_contaminated`` warns, lists the
tasks under ``contaminated`` in eval.json and marks the provenance (the register
stage then tags the MLflow run ``contaminated=true``).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

from components.common.run_environment import git_label
from components.common.threads import use_threads
from components.config import ConfigError, EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.data.tasks import load_task
from components.evaluation import base_model_accuracy, plot_scaling
from components.evaluation.compute_axis import compute_axis
from components.evaluation.executors import EndpointLauncher, executor_for, running
from components.evaluation.plan import plan_tasks
from components.evaluation.plot import plot_compute_matched
from components.evaluation.provenance import provenance
from components.evaluation.sweep import assemble
from components.inference.methods.registry import section_problems
from components.paths import Paths, base_model_ref
from components.records import Question, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


class ContaminationError(RuntimeError):
    """A reported task the training data was not decontaminated against."""


def contamination_check(tasks: list[str], filter_report: Path, allow: bool) -> list[str]:
    """The tasks in ``tasks`` the training pool was not decontaminated against; raises unless ``allow``."""
    against = json.loads(filter_report.read_text()).get("decontaminated_against", {}) if filter_report.exists() else {}
    missing = [t for t in tasks if t not in against]
    if missing:
        msg = (f"evaluate.tasks: {missing} not in the training data's decontamination "
               f"({sorted(against) or 'none'}, from {filter_report}); add them to decontamination.tasks and rerun "
               "the filter stage, or set evaluate.allow_contaminated: true to report them tagged contaminated")
        if not allow:
            raise ContaminationError(msg)
        log.warning("CONTAMINATED: %s", msg)
    return missing


def model_hash(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def eval_questions(evaluate: EvaluateConfig, paths: Paths) -> dict[str, list[Question]]:
    out = {}
    for name in evaluate.tasks:
        if name == "heldout":
            out[name] = read_jsonl(paths.heldout, Question)[: evaluate.task_limit]
        else:
            out[name] = load_task(name, evaluate.task_files.get(name), evaluate.task_limit)
    return out


def _as_records(gens: list, seed: int) -> list[dict]:
    """Generations as sample records with the evaluation's seed (records from Serve already are)."""
    return [g if isinstance(g, dict) else {**g.model_dump(), "seed": seed} for g in gens]


def evaluate_stage(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, serve: ServeConfig,
                   paths: Paths, launch_endpoint: Optional[EndpointLauncher] = None) -> dict:
    """Sweep thinking budgets on every task in evaluate.tasks (the first is the headline) and plot scaling.

    On the headline task also the compute-matched comparison (``evaluate.compute_matched``; plotted to
    ``compute_matched.png``) and the extrapolation ablations (``wait_string_ablation``, ``num_waits_ablation``),
    in process (after the Serve sweep with ``via: serve``).

    The stage plans each task's parts (:func:`~components.evaluation.plan.plan_tasks`), runs them on the executor
    ``evaluate.via`` names (:mod:`components.evaluation.executors`) and assembles each task's report. One engine at
    a time: the base model (its reference accuracy on every task), then the executor's (the Serve application,
    then the in-process engine for the extras; or the in-process engine alone); each is shut down and its memory
    freed before the next starts, so none finds its GPUs taken."""
    problems = section_problems(evaluate)  # before any model loads
    if problems:
        raise ConfigError("; ".join(problems))
    contaminated = contamination_check(evaluate.tasks, paths.metric("filter_report.json"), evaluate.allow_contaminated)
    use_threads()
    digest = model_hash(paths.sft_model)
    tasks = eval_questions(evaluate, paths)
    executor = executor_for(evaluate, engine, model, serve, paths, digest, launch_endpoint)  # refuses before work
    plans = plan_tasks(evaluate, tasks, sweep_in_process=evaluate.via != "serve")
    with running(engine, model.dtype, base_model_ref(model, paths), model.revision) as base:
        base_acc = {name: base_model_accuracy(base, questions, evaluate.base_max_new_tokens)
                    for name, questions in tasks.items()}
    results = executor.run(plans)
    per_task, all_samples = {}, []
    for plan in plans:
        report, gens = assemble(plan.questions, evaluate, results[plan.task], extras=plan.headline)
        report.update(base_accuracy=base_acc[plan.task], questions=len(plan.questions))
        per_task[plan.task] = report
        all_samples += [{**r, "task": plan.task} for r in _as_records(gens, evaluate.seed)]
    headline = per_task[evaluate.tasks[0]]
    record = {**provenance(evaluate, engine, model, serve, digest, paths), "contaminated": bool(contaminated)}
    report = {**headline, "task": evaluate.tasks[0], "tasks": per_task, "model_hash": digest,
              "git_commit": git_label(record.get("git") or {}),
              "engine": engine.backend, "contaminated": contaminated, "provenance": record}
    write_jsonl(paths.eval_samples, all_samples)
    write_json(paths.metric("eval.json"), report)
    write_json(paths.plot("scaling.json"), [  # a DVC plot: JSON (DVC reads no JSONL)
        {"budget": p["budget"], "avg_thinking_tokens": round(p["avg_thinking_tokens"], 2),
         "accuracy": p["accuracy"]} for p in report["points"]])
    plot_scaling(report, paths.plot("scaling.png"), title=f"Budget forcing on {report['task']}")
    plot_compute_matched(report.get("compute_matched"), paths.plot("compute_matched.png"),
                         title=f"Sequential vs parallel scaling on {report['task']}",
                         axis=compute_axis(report, all_samples))
    return report
