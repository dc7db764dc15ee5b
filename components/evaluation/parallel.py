"""The in-process evaluation's independent parts side by side, one engine per worker process.

The headline sweep, each compute-matched method the sweep does not already cover
(majority voting, REBASE) and the extrapolation ablations share nothing but the
model, so ``evaluate.workers`` spawned processes run them, longest first, each
holding its own engine with its share of the torch threads. Every part makes the
engine calls it makes in one process, and the thread count does not change the
numbers, so the report and the generations (in the same order) are those of
:func:`components.evaluation.sweep.evaluate_sweep`
(``tests/components/test_parallel_evaluation.py``). On a 2-core CPU a tiny
model's generation gains little from a second torch thread (Python and memory
bound) and nearly twice from a second process.

    report, gens = evaluate_in_parallel(engine_cfg, "float32", "models/tiny/sft", questions, cfg, workers=2)
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

from components.config import EngineConfig, EvaluateConfig
from components.evaluation.sweep import (
    ablations_section,
    compute_matched_method,
    extras_subset,
    has_ablations,
    headline_sweep,
    matched_report,
    swept_methods,
)
from components.records import Generation, Question

Part = tuple[str, Optional[str]]  # ("sweep", None) | ("matched", method) | ("ablations", None)

_engine = None  # the worker process's engine


def parts(cfg: EvaluateConfig, questions: list[Question]) -> list[Part]:
    """What runs in the workers, in submission order: the costliest first, so the workers end together. On the
    demo (2 workers): the sweep ~20 s, REBASE ~32 s (a tree search makes many short engine calls), the
    ablations ~18 s, majority voting ~10 s. A compute-matched method the sweep runs is scored from the sweep's
    generations, as ``compute_matched`` does: only when every question id is distinct (else it is rerun)."""
    distinct = len({q.id for q in questions}) == len(questions)
    swept = set(swept_methods(cfg)) if distinct else set()
    matched = [m for m in cfg.compute_matched if m not in swept]
    out: list[Part] = [("sweep", None)] + [("matched", m) for m in matched if m == "rebase"]
    if has_ablations(cfg):
        out.append(("ablations", None))
    return out + [("matched", m) for m in matched if m != "rebase"]


def run_part(engine, part: Part, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    kind, method = part
    if kind == "sweep":
        return headline_sweep(engine, questions, cfg)
    if kind == "matched":
        return compute_matched_method(engine, extras_subset(questions, cfg), cfg, method)
    return ablations_section(engine, extras_subset(questions, cfg), cfg)


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
    todo = parts(cfg, questions)
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
    report, gens = done[("sweep", None)]
    extra: list[Generation] = []
    if cfg.compute_matched:
        subset, swept = extras_subset(questions, cfg), [g for g in gens if g.budget is not None]
        per_method = {}
        for m in cfg.compute_matched:
            if ("matched", m) in done:
                per_method[m], more = done[("matched", m)]
                extra += more
            else:  # scored from the headline sweep's generations
                per_method[m], _ = compute_matched_method(None, subset, cfg, m, swept)
        report["compute_matched"] = matched_report(len(subset), per_method)
    if has_ablations(cfg):
        report["ablations"], more = done[("ablations", None)]
        extra += more
    return report, gens + extra
