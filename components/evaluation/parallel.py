"""The in-process evaluation's independent parts side by side, one engine per worker process.

The headline sweep, each compute-matched method the sweep does not already cover
(majority voting, REBASE) and the extrapolation ablations
(:func:`components.evaluation.sweep.evaluation_parts`) share nothing but the
model, so ``evaluate.workers`` spawned processes run them, largest first by an estimate of their cost, each
holding its own engine with its share of the torch threads. Every part makes the
engine calls it makes in one process, and the thread count does not change the
numbers, so the report and the generations (in the same order) are those of
:func:`components.evaluation.sweep.evaluate_sweep`, assembled by the same function
(``tests/components/test_parallel_evaluation.py``). On a 2-core CPU a tiny
model's generation gains little from a second torch thread (Python and memory
bound) and nearly twice from a second process.

    report, gens = evaluate_in_parallel(engine_cfg, "float32", "models/tiny/sft", questions, cfg, workers=2)
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from components.config import EngineConfig, EvaluateConfig
from components.evaluation.sweep import Part, assemble, evaluation_parts, largest_first, run_part
from components.records import Generation, Question

_engine = None  # the worker process's engine


def _start_worker(engine_json: str, dtype: str, model: str, workers: int) -> None:
    global _engine
    from components.common.threads import use_threads
    from components.inference.build import engine_for
    use_threads(workers)
    _engine = engine_for(EngineConfig.model_validate_json(engine_json), dtype, model)


def _run_in_worker(part: Part, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    return run_part(_engine, part, questions, cfg)


def evaluate_in_parallel(engine: EngineConfig, dtype: str, model: str, questions: list[Question],
                         cfg: EvaluateConfig, workers: int) -> tuple[dict, list[Generation]]:
    """``evaluate_sweep(engine_for(engine, dtype, model), questions, cfg)`` with its parts in ``workers``
    processes (the HF engine: each process loads the model)."""
    todo = largest_first(evaluation_parts(cfg, questions), cfg, len(questions))
    size = min(workers, len(todo))
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding Ray's, Prefect's and torch's threads
    with ProcessPoolExecutor(size, mp_context=ctx, initializer=_start_worker,
                             initargs=(engine.model_dump_json(), dtype, model, size)) as pool:
        futures = {p: pool.submit(_run_in_worker, p, questions, cfg) for p in todo}
        try:
            done = {p: f.result() for p, f in futures.items()}
        except BaseException:  # a failed part fails the evaluation now, not after the others finish
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return assemble(questions, cfg, done)
