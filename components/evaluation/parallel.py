"""The in-process evaluation's independent parts side by side, one engine per worker process.

The headline sweep, each compute-matched method the sweep does not already cover
(majority voting, REBASE) and the extrapolation ablations
(:func:`components.evaluation.sweep.evaluation_parts`) share nothing but the
model, so ``evaluate.workers`` processes run them, largest first by an estimate of their cost, each
holding its own engine with its share of the torch threads: this process is one of them (it has torch and
transformers imported already; a spawned worker spends ~8 s of a core importing them and loading the model),
``workers - 1`` are spawned. Every part makes the
engine calls it makes in one process, and the thread count does not change the
numbers, so the report and the generations (in the same order) are those of
:func:`components.evaluation.sweep.evaluate_sweep`, assembled by the same function
(``tests/evaluation/test_parallel.py``). On a 2-core CPU a tiny
model's generation gains little from a second torch thread (Python and memory
bound) and nearly twice from a second process.

    report, gens = evaluate_in_parallel(engine_cfg, "float32", "models/tiny/sft", questions, cfg, workers=2)
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from typing import Optional

from components.common.threads import use_threads
from components.config import EngineConfig, EvaluateConfig
from components.evaluation.sweep import (
    Part,
    assemble,
    check_methods,
    evaluated_methods,
    evaluation_parts,
    largest_first,
    run_part,
)
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


def evaluate_in_parallel(engine: EngineConfig, dtype: str, model: str, questions: list[Question],
                         cfg: EvaluateConfig, workers: int, local_engine=None) -> tuple[dict, list[Generation]]:
    """``evaluate_sweep(build_engine(engine, dtype, model), questions, cfg)`` with its parts over ``workers``
    processes, this one included (``local_engine``, else one built here; the HF engine: each process loads the
    model). Each process takes the largest part left once it is ready and whenever it is free; the first failure
    stops the others taking more and is raised (an interrupt before any error; the rest are logged)."""
    import torch

    if local_engine is not None:
        # a refused method stops the evaluation before any worker starts (each part checks its own methods too, on
        # its process's engine)
        check_methods(local_engine, cfg, evaluated_methods(cfg))
    todo = deque(largest_first(evaluation_parts(cfg, questions), cfg, len(questions)))
    size = max(1, min(workers, len(todo)))
    lock, done, failed = threading.Lock(), {}, []

    def take() -> Optional[Part]:
        with lock:
            return todo.popleft() if todo and not failed else None

    def work(run, ready=lambda: None) -> None:
        try:
            ready()  # a worker takes no part before it can start it: none waits on a process still importing
            while (part := take()) is not None:
                done[part] = run(part)
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            with lock:
                failed.append(e)

    ctx = multiprocessing.get_context("spawn")  # never fork a process holding Ray's, Prefect's and torch's threads
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(size - 1, mp_context=ctx, initializer=_start_worker,
                             initargs=(engine.model_dump_json(), dtype, model, size)) if size > 1 else nullcontext() as pool:
        feeders = [threading.Thread(target=work, name=f"s1flow-eval-feeder-{i}", daemon=True,
                                    args=(lambda p: pool.submit(_run_in_worker, p, questions, cfg).result(),
                                          lambda: pool.submit(_ready).result()))
                   for i in range(size - 1)]
        try:
            for f in feeders:
                f.start()
            use_threads(size)  # this process's share, as each worker's
            local = local_engine or build_engine(engine, dtype, model)
            work(lambda p: run_part(local, p, questions, cfg))
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
    return assemble(questions, cfg, done)
