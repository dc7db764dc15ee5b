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
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable, Optional

from components.common.threads import use_threads
from components.config import EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.data.tasks import load_task
from components.evaluation import base_model_accuracy, evaluate_sweep, plot_scaling
from components.evaluation.parallel import evaluate_in_parallel
from components.evaluation.plot import plot_compute_matched
from components.evaluation.provenance import engine_version, provenance
from components.evaluation.report import git_commit
from components.evaluation.served import evaluate_via_serve
from components.evaluation.sweep import evaluation_extras, evaluation_parts, has_extras
from components.inference.engine import build_engine
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


# (serve section, engine section, dtype, model path) -> a context manager yielding the endpoint's base URL.
# The pipeline passes Serve's launcher in; evaluation never imports serving.
EndpointLauncher = Callable[[ServeConfig, EngineConfig, str, str], AbstractContextManager[str]]


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


def evaluate_stage(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, serve: ServeConfig,
                   paths: Paths, launch_endpoint: Optional[EndpointLauncher] = None) -> dict:
    """Sweep thinking budgets on every task in evaluate.tasks (the first is the headline) and plot scaling.

    On the headline task also the compute-matched comparison (``evaluate.compute_matched``; plotted to
    ``compute_matched.png``) and the extrapolation ablations (``wait_string_ablation``, ``num_waits_ablation``),
    in process (after the Serve sweep with ``via: serve``)."""
    contaminated = contamination_check(evaluate.tasks, paths.metric("filter_report.json"), evaluate.allow_contaminated)
    use_threads()
    digest = model_hash(paths.sft_model)
    per_task, all_samples = {}, []
    base = build_engine(engine, model.dtype, base_model_ref(model, paths))
    tasks = eval_questions(evaluate, paths)
    headline = next(iter(tasks.values()))
    parallel = evaluate.via == "in_process" and evaluate.workers > 1 and len(evaluation_parts(evaluate, headline)) > 1
    # in process: the SFT engine here (with evaluate.workers, this process's share of the parts runs on it)
    sft = build_engine(engine, model.dtype, str(paths.sft_model)) if evaluate.via == "in_process" else None
    for i, (name, questions) in enumerate(tasks.items()):
        base_acc = base_model_accuracy(base, questions, evaluate.base_max_new_tokens)
        if evaluate.via == "serve":
            if launch_endpoint is None:
                raise ValueError("evaluate.via: 'serve' needs the Serve launcher (run the stage through s1flow)")
            with launch_endpoint(serve, engine, model.dtype, str(paths.sft_model)) as url:
                report, samples = evaluate_via_serve(
                    evaluate, serve, url, questions, paths.runs / f"serve_samples_{name}.jsonl", digest,
                    engine=f"{engine.backend} {engine_version(engine.backend)}",
                    thinking_cap=engine.unlimited_thinking_tokens)
            if i == 0 and has_extras(evaluate):  # the comparison and ablations run in process, after Serve
                sft = build_engine(engine, model.dtype, str(paths.sft_model))
                more, gens = evaluation_extras(sft, questions, evaluate)
                report.update(more)
                samples += [{**g.model_dump(), "seed": evaluate.seed} for g in gens]
        elif parallel and i == 0:  # the headline task's parts side by side (evaluate.workers)
            report, gens = evaluate_in_parallel(engine, model.dtype, str(paths.sft_model), questions, evaluate,
                                                evaluate.workers, local_engine=sft)
            samples = [{**g.model_dump(), "seed": evaluate.seed} for g in gens]
        else:  # the compute-matched comparison and the ablations: headline task only
            report, gens = evaluate_sweep(sft, questions, evaluate, extras=i == 0)
            samples = [{**g.model_dump(), "seed": evaluate.seed} for g in gens]
        report.update(base_accuracy=base_acc, questions=len(questions))
        per_task[name] = report
        all_samples += [{**r, "task": name} for r in samples]
    headline = per_task[evaluate.tasks[0]]
    report = {**headline, "task": evaluate.tasks[0], "tasks": per_task, "model_hash": digest,
              "git_commit": git_commit(paths.root),
              "engine": engine.backend, "contaminated": contaminated,
              "provenance": {**provenance(evaluate, engine, model.dtype, digest), "contaminated": bool(contaminated)}}
    write_jsonl(paths.eval_samples, all_samples)
    write_json(paths.metric("eval.json"), report)
    write_json(paths.plot("scaling.json"), [  # a DVC plot: JSON (DVC reads no JSONL)
        {"budget": p["budget"], "avg_thinking_tokens": round(p["avg_thinking_tokens"], 2),
         "accuracy": p["accuracy"]} for p in report["points"]])
    plot_scaling(report, paths.plot("scaling.png"), title=f"Budget forcing on {report['task']}")
    plot_compute_matched(report.get("compute_matched"), paths.plot("compute_matched.png"),
                         title=f"Sequential vs parallel scaling on {report['task']}")
    return report
