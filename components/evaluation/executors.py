"""Where an evaluation's parts run: one interface, two places.

The evaluate stage plans the parts (:func:`components.evaluation.plan.plan_tasks`), hands the plan to one
executor, and assembles each task's report from what comes back. An executor owns the engines it runs on: it
starts them, frees their memory after, and never holds two on one set of GPUs.

- :class:`InProcess`: one SFT engine in this process (and what the methods load besides it, e.g. REBASE's reward
  model); with ``evaluate.workers`` > 1 the parts go side by side over worker processes, this one among them
  (:func:`components.evaluation.parallel.run_in_parallel`).
- :class:`ThroughServe`: every task's sweep through one Serve application (started once, torn down after the
  last), then the other parts on an :class:`InProcess` executor once Serve's replicas are gone.

    results = executor_for(evaluate, engine, model, serve, paths, digest, launch_endpoint).run(plans)
"""
from __future__ import annotations

import gc
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from components.config import EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.evaluation.parallel import run_in_parallel
from components.evaluation.plan import SWEEP, PlanResults, TaskPlan, without_sweeps
from components.evaluation.provenance import engine_version
from components.evaluation.served import evaluate_via_serve
from components.evaluation.sweep import check_methods, method, part_methods, run_parts
from components.inference.engine import Engine, build_engine
from components.paths import Paths

# (serve section, engine section, dtype, model path) -> a context manager yielding the endpoint's base URL.
# The pipeline passes Serve's launcher in; evaluation never imports serving.
EndpointLauncher = Callable[[ServeConfig, EngineConfig, str, str], AbstractContextManager[str]]


def engine_options(engine: EngineConfig) -> dict:
    """The backend options the evaluation builds its engines with (vLLM: its memory share, when set)."""
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


def run_in_process(engine, plans: list[TaskPlan], cfg: EvaluateConfig) -> PlanResults:
    """Every part of ``plans`` on ``engine``, in order; every method asked first whether it has a meaning for the
    engine's model, so a refused one stops the evaluation before the first generation."""
    check_methods(engine, cfg, part_methods([p for plan in plans for p in plan.parts], cfg))
    return {plan.task: run_parts(engine, plan.parts, plan.questions, cfg) for plan in plans}


class Executor(Protocol):
    def run(self, plans: list[TaskPlan]) -> PlanResults:
        """Every part of ``plans``: results by task, then part."""


class InProcess:
    """The parts on an in-process engine of ``model`` (with ``evaluate.workers`` > 1 and more than one part, side
    by side over worker processes)."""

    def __init__(self, evaluate: EvaluateConfig, engine: EngineConfig, dtype: str, model: str):
        self.evaluate, self.engine, self.dtype, self.model = evaluate, engine, dtype, model

    def run(self, plans: list[TaskPlan]) -> PlanResults:
        parts = sum(len(plan.parts) for plan in plans)
        with running(self.engine, self.dtype, self.model) as engine, method_models(self.evaluate):
            if self.evaluate.workers > 1 and parts > 1:
                return run_in_parallel(self.engine, self.dtype, self.model, plans, self.evaluate,
                                       self.evaluate.workers, local_engine=engine)
            return run_in_process(engine, plans, self.evaluate)


class ThroughServe:
    """Every sweep through the Serve application ``launch`` starts (its graded records appended, resumably, to
    ``samples_dir/serve_samples_<task>.jsonl``); the other parts on ``rest`` after Serve is torn down."""

    def __init__(self, evaluate: EvaluateConfig, serve: ServeConfig, engine: EngineConfig, dtype: str, model: str,
                 launch: EndpointLauncher, samples_dir: Path, model_hash: str, rest: Executor):
        self.evaluate, self.serve, self.engine, self.dtype, self.model = evaluate, serve, engine, dtype, model
        self.launch, self.samples_dir, self.model_hash, self.rest = launch, samples_dir, model_hash, rest

    def run(self, plans: list[TaskPlan]) -> PlanResults:
        out: PlanResults = {plan.task: {} for plan in plans}
        swept = [plan for plan in plans if SWEEP in plan.parts]
        if swept:
            with self.launch(self.serve, self.engine, self.dtype, self.model) as url:
                for plan in swept:
                    out[plan.task][SWEEP] = evaluate_via_serve(
                        self.evaluate, self.serve, url, plan.questions,
                        self.samples_dir / f"serve_samples_{plan.task}.jsonl", self.model_hash,
                        engine=f"{self.engine.backend} {engine_version(self.engine.backend)}",
                        thinking_cap=self.engine.unlimited_thinking_tokens)
        rest = without_sweeps(plans)
        if rest:  # Serve's replicas are gone: the in-process engine takes the GPUs
            for task, results in self.rest.run(rest).items():
                out[task].update(results)
        return out


def executor_for(evaluate: EvaluateConfig, engine: EngineConfig, model: ModelConfig, serve: ServeConfig,
                 paths: Paths, model_hash: str, launch: Optional[EndpointLauncher]) -> Executor:
    """The executor ``evaluate.via`` names, on the SFT model."""
    in_process = InProcess(evaluate, engine, model.dtype, str(paths.sft_model))
    if evaluate.via != "serve":
        return in_process
    if launch is None:
        raise ValueError("evaluate.via: 'serve' needs the Serve launcher (run the stage through s1flow)")
    return ThroughServe(evaluate, serve, engine, model.dtype, str(paths.sft_model), launch, paths.runs, model_hash,
                        rest=in_process)
