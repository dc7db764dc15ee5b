"""An evaluation's independent parts side by side, one engine per worker process.

Each task's sweep, and on the headline task each compute-matched method the sweep does not already cover
(majority voting, REBASE) and the extrapolation ablations (:mod:`components.evaluation.plan`), share nothing
but the model, so ``evaluate.workers`` processes run them, largest first by an estimate of their cost, each
holding its own engine with its share of the torch threads: this process is one of them (it has torch and
transformers imported already; a spawned worker spends ~8 s of a core importing them and loading the model),
``workers - 1`` are spawned. Every part makes the engine calls it makes in one process, and the thread count
does not change the numbers, so each task's report and generations (in the same order) are those of the
one-process evaluation, assembled by the same function (``tests/evaluation/test_parallel.py``). On a 2-core
CPU a tiny model's generation gains little from a second torch thread (Python and memory bound) and nearly
twice from a second process.

    results = run_in_parallel(engine_cfg, "float32", "models/tiny/sft", plans, cfg, workers=2)
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from typing import NamedTuple, Optional, Sequence

from components.common.threads import use_threads
from components.config import EngineConfig, EvaluateConfig
from components.evaluation.plan import PlanResults, TaskPlan
from components.evaluation.sweep import Part, assemble, check_methods, evaluation_parts, part_cost, part_methods, run_part
from components.inference.engine import build_engine
from components.records import Generation, Question

_engine = None  # the worker process's engine


def _start_worker(engine_json: str, dtype: str, model: str, workers: int) -> None:
    global _engine
    use_threads(workers)
    _engine = build_engine(EngineConfig.model_validate_json(engine_json), dtype, model)


def _run_in_worker(part: Part, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    return run_part(_engine, part, questions, cfg)


def _ready() -> None:
    """A no-op a worker runs once its initializer (imports, model) is done."""


class Job(NamedTuple):
    """One part of one task's plan."""
    task: str
    part: Part


def largest_first(plans: Sequence[TaskPlan], cfg: EvaluateConfig) -> list[Job]:
    """Every part of ``plans`` by estimated cost (:meth:`~components.inference.methods.base.Method.cost`, in
    generated sequences), largest first, so side-by-side workers end together; ties in plan order."""
    jobs = [(Job(plan.task, part), len(plan.questions)) for plan in plans for part in plan.parts]
    return [job for job, n in sorted(jobs, key=lambda jn: -part_cost(jn[0].part, cfg, jn[1]))]


def run_in_parallel(engine: EngineConfig, dtype: str, model: str, plans: Sequence[TaskPlan], cfg: EvaluateConfig,
                    workers: int, local_engine=None) -> PlanResults:
    """Every part of ``plans`` over ``workers`` processes, this one included (``local_engine``, else one built
    here; the HF engine: each process loads the model). Each process takes the largest part left (of any task)
    once it is ready and whenever it is free; the first failure stops the others taking more and is raised (an
    interrupt before any error; the rest are logged). Results by task, then part, as :func:`run_in_process`."""
    import torch

    questions = {plan.task: plan.questions for plan in plans}
    if local_engine is not None:
        # a refused method stops the evaluation before any worker starts (each part checks its own methods too, on
        # its process's engine)
        check_methods(local_engine, cfg, part_methods([p for plan in plans for p in plan.parts], cfg))
    todo = deque(largest_first(plans, cfg))
    size = max(1, min(workers, len(todo)))
    lock, done, failed = threading.Lock(), {}, []

    def take() -> Optional[Job]:
        with lock:
            return todo.popleft() if todo and not failed else None

    def work(run, ready=lambda: None) -> None:
        try:
            ready()  # a worker takes no part before it can start it: none waits on a process still importing
            while (job := take()) is not None:
                done[job] = run(job)
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            with lock:
                failed.append(e)

    ctx = multiprocessing.get_context("spawn")  # never fork a process holding Ray's, Prefect's and torch's threads
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(size - 1, mp_context=ctx, initializer=_start_worker,
                             initargs=(engine.model_dump_json(), dtype, model, size)) if size > 1 else nullcontext() as pool:
        feeders = [threading.Thread(target=work, name=f"s1flow-eval-feeder-{i}", daemon=True,
                                    args=(lambda j: pool.submit(_run_in_worker, j.part, questions[j.task], cfg).result(),
                                          lambda: pool.submit(_ready).result()))
                   for i in range(size - 1)]
        try:
            for f in feeders:
                f.start()
            use_threads(size)  # this process's share, as each worker's
            local = local_engine or build_engine(engine, dtype, model)
            work(lambda j: run_part(local, j.part, questions[j.task], cfg))
        except BaseException as e:
            with lock:
                failed.append(e)
        finally:
            torch.set_num_threads(threads)
            for f in feeders:
                if f.ident is not None:  # started
                    f.join()
    if failed:
        first = next((e for e in failed if not isinstance(e, Exception)), failed[0])  # an interrupt stays one
        for e in failed:
            if e is not first:
                logging.getLogger(__name__).error("evaluation part failed as well: %s: %s", type(e).__name__, e)
        raise first
    return {plan.task: {part: done[Job(plan.task, part)] for part in plan.parts} for plan in plans}


def evaluate_in_parallel(engine: EngineConfig, dtype: str, model: str, questions: list[Question],
                         cfg: EvaluateConfig, workers: int, local_engine=None) -> tuple[dict, list[Generation]]:
    """``evaluate_sweep(build_engine(engine, dtype, model), questions, cfg)`` with its parts over ``workers``
    processes (:func:`run_in_parallel`)."""
    plan = TaskPlan("task", questions, evaluation_parts(cfg, questions), headline=True)
    return assemble(questions, cfg, run_in_parallel(engine, dtype, model, [plan], cfg, workers, local_engine)["task"])
