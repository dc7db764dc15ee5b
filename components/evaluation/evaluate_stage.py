"""Stage entry point of the evaluation package: the budget sweep on every task in ``evaluate.tasks``.

Before anything runs, the stage checks that the training data was decontaminated
against every task it reports (``decontaminated_against`` in the filter report):
it refuses otherwise, or with ``evaluate.allow_contaminated`` warns, lists the
tasks under ``contaminated`` in eval.json and marks the provenance (the register
stage then tags the MLflow run ``contaminated=true``).
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from components.common.run_environment import git_label
from components.common.threads import use_threads
from components.config import ConfigError, EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.data.tasks import load_task
from components.evaluation import base_model_accuracy, evaluate_sweep, plot_scaling
from components.evaluation.compute_axis import compute_axis
from components.evaluation.parallel import evaluate_in_parallel
from components.evaluation.plot import plot_compute_matched
from components.evaluation.provenance import engine_version, provenance
from components.evaluation.served import evaluate_via_serve
from components.evaluation.sweep import evaluation_extras, evaluation_parts, has_extras, method
from components.inference.engine import Engine, build_engine
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


def engine_options(engine: EngineConfig) -> dict:
    """The backend options the evaluate stage builds its engines with (vLLM: its memory share, when set)."""
    return {"gpu_memory_utilization": engine.gpu_memory_utilization} \
        if engine.backend == "vllm" and engine.gpu_memory_utilization else {}


def free_accelerator_memory() -> None:
    """Collect what a shut-down engine left and hand the CUDA allocator's cache back to the device."""
    gc.collect()
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def running(engine: EngineConfig, dtype: str, model: str, revision: Optional[str] = None) -> Iterator[Engine]:
    """An engine for the duration of the block, then shut down (vLLM: its engine core process ends) and its memory
    freed, before anything else starts on the same GPUs. ``revision``: a hub model's pinned commit."""
    built = build_engine(engine, dtype, model, revision=revision, **engine_options(engine))
    try:
        yield built
    finally:
        built.shutdown()
        del built
        free_accelerator_memory()


@contextmanager
def method_models(evaluate: EvaluateConfig) -> Iterator[None]:
    """What the compute-matched methods load besides the engine (REBASE's process reward model, on its device)
    for the block, released after; the methods then find it loaded."""
    loaded = [method(evaluate, name) for name in evaluate.used_methods()]
    try:
        for m in loaded:
            m.acquire()
        yield
    finally:
        for m in loaded:
            m.release()
        free_accelerator_memory()


Results = dict[str, tuple[dict, list[dict]]]  # task -> (report, sample records)


def _with_seed(gens, seed: int) -> list[dict]:
    return [{**g.model_dump(), "seed": seed} for g in gens]


def sweep_via_serve(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, serve: ServeConfig,
                    paths: Paths, tasks: dict[str, list[Question]], digest: str,
                    launch_endpoint: Optional[EndpointLauncher]) -> Results:
    """Every task through one Serve application (started once, torn down after the last task), then the
    headline task's compute-matched comparison and ablations on an in-process engine."""
    if launch_endpoint is None:
        raise ValueError("evaluate.via: 'serve' needs the Serve launcher (run the stage through s1flow)")
    out: Results = {}
    with launch_endpoint(serve, engine, model.dtype, str(paths.sft_model)) as url:
        for name, questions in tasks.items():
            out[name] = evaluate_via_serve(
                evaluate, serve, url, questions, paths.runs / f"serve_samples_{name}.jsonl", digest,
                engine=f"{engine.backend} {engine_version(engine.backend)}",
                thinking_cap=engine.unlimited_thinking_tokens)
    headline = next(iter(tasks))
    if has_extras(evaluate):  # Serve's replicas are gone: the in-process engine takes the GPUs
        with running(engine, model.dtype, str(paths.sft_model)) as sft, method_models(evaluate):
            more, gens = evaluation_extras(sft, tasks[headline], evaluate)
        out[headline][0].update(more)
        out[headline][1].extend(_with_seed(gens, evaluate.seed))
    return out


def sweep_in_process(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, paths: Paths,
                     tasks: dict[str, list[Question]]) -> Results:
    """Every task on one in-process SFT engine; the compute-matched comparison and the ablations on the headline
    task (with evaluate.workers, its parts side by side, this process's share on this engine)."""
    headline = next(iter(tasks.values()))
    parallel = evaluate.workers > 1 and len(evaluation_parts(evaluate, headline)) > 1
    out: Results = {}
    with running(engine, model.dtype, str(paths.sft_model)) as sft, method_models(evaluate):
        for i, (name, questions) in enumerate(tasks.items()):
            if parallel and i == 0:
                report, gens = evaluate_in_parallel(engine, model.dtype, str(paths.sft_model), questions, evaluate,
                                                    evaluate.workers, local_engine=sft)
            else:
                report, gens = evaluate_sweep(sft, questions, evaluate, extras=i == 0)
            out[name] = (report, _with_seed(gens, evaluate.seed))
    return out


def evaluate_stage(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, serve: ServeConfig,
                   paths: Paths, launch_endpoint: Optional[EndpointLauncher] = None) -> dict:
    """Sweep thinking budgets on every task in evaluate.tasks (the first is the headline) and plot scaling.

    On the headline task also the compute-matched comparison (``evaluate.compute_matched``; plotted to
    ``compute_matched.png``) and the extrapolation ablations (``wait_string_ablation``, ``num_waits_ablation``),
    in process (after the Serve sweep with ``via: serve``).

    One engine at a time: the base model (its reference accuracy on every task), then the Serve application or
    the in-process SFT engine, then (after Serve) the in-process engine for the extras; each is shut down and its
    memory freed before the next starts, so none finds its GPUs taken."""
    problems = section_problems(evaluate)  # before any model loads
    if problems:
        raise ConfigError("; ".join(problems))
    contaminated = contamination_check(evaluate.tasks, paths.metric("filter_report.json"), evaluate.allow_contaminated)
    use_threads()
    digest = model_hash(paths.sft_model)
    tasks = eval_questions(evaluate, paths)
    with running(engine, model.dtype, base_model_ref(model, paths), model.revision) as base:
        base_acc = {name: base_model_accuracy(base, questions, evaluate.base_max_new_tokens)
                    for name, questions in tasks.items()}
    if evaluate.via == "serve":
        results = sweep_via_serve(evaluate, engine, model, serve, paths, tasks, digest, launch_endpoint)
    else:
        results = sweep_in_process(evaluate, engine, model, paths, tasks)
    per_task, all_samples = {}, []
    for name, (report, samples) in results.items():
        report.update(base_accuracy=base_acc[name], questions=len(tasks[name]))
        per_task[name] = report
        all_samples += [{**r, "task": name} for r in samples]
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
