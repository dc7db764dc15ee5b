"""Evaluation: sweeps of a test-time method over thinking budgets on a held-out set.

For each budget the model thinks under ``evaluate.method`` (budget forcing by
default: ``max_thinking_tokens=budget``), plus one run capped only by
``unlimited_thinking_tokens``; methods in ``compare_methods`` are swept too.
Answers are graded by the question's kind (math-verify, or the final option
letter). The base model answers in its own chat format as the reference.
Produces per-sample records, per-budget points, Control/Scaling/Performance
and the scaling-curve PNG.

    report = evaluate_sweep(engine, questions, cfg.evaluate)
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional

from components.common.grading import grade_response
from components.common.progress import progress_bar
from components.config import EvaluateConfig
from components.evaluation.metrics import Run, SweepPoint, sweep_metrics
from components.inference.attempts import student_attempts
from components.inference.methods import UNBOUNDED_METHODS, run_method, sweep_values
from components.records import Example, Generation, Question, Trace


def run_point(engine, questions: list[Question], cfg: EvaluateConfig, method: str,
              budget: Optional[int]) -> list[Generation]:
    """One sweep point: ``budget`` thinking tokens (None: only the unlimited cap), or N samples when voting."""
    label = f"{method} {'no budget' if budget is None else budget}"
    # No budget: the reference run is budget forcing capped only by unlimited_thinking_tokens.
    name = "budget_forcing" if budget is None else method
    with progress_bar(f"evaluating ({label})", total=len(questions)) as advance:
        results = run_method(name, engine, [q.question for q in questions], budget, cfg, progress=advance)
    out = []
    for q, r in zip(questions, results):
        predicted, correct = grade_response(q, r.answer)  # by the question's kind (GPQA: the option letter)
        out.append(Generation(
            question_id=q.id, budget=budget, method=method, prompt=q.question, thinking=r.thinking,
            answer=r.answer, thinking_tokens=r.thinking_tokens, answer_tokens=r.answer_tokens,
            waits_used=r.waits_used, hit_budget=r.hit_budget, predicted=predicted, gold=q.answer,
            correct=correct,
        ))
    return out


def summarise(generations: list[Generation]) -> SweepPoint:
    n = len(generations)
    return SweepPoint(budget=generations[0].budget, avg_thinking_tokens=sum(g.thinking_tokens for g in generations) / n,
                      accuracy=sum(g.correct for g in generations) / n)


def sweep(engine, questions: list[Question], cfg: EvaluateConfig, method: str) -> tuple[dict, list[Generation]]:
    """Sweep one method over its values; Control/Scaling/Performance for it."""
    gens_all, points, runs = [], [], []
    unbounded = method in UNBOUNDED_METHODS
    for value in sweep_values(method, cfg):
        gens = run_point(engine, questions, cfg, method, value)
        gens_all += gens
        points.append(summarise(gens))
        runs += [Run(g.thinking_tokens, cfg.min_thinking_tokens, None if unbounded else value) for g in gens]
    return {"points": [asdict(p) for p in points], **sweep_metrics(points, runs)}, gens_all


def base_model_accuracy(engine, questions: list[Question], max_new_tokens: int) -> float:
    """The base model answering in its own chat format, no thinking phase (s1's baseline)."""
    examples = [Example(question=q, trace=Trace(question_id=q.id, teacher="none")) for q in questions]
    with progress_bar("evaluating base model", total=len(examples)) as advance:
        solved = student_attempts(engine, examples, max_new_tokens, progress=advance)
    return sum(solved) / len(solved)


def evaluate_sweep(engine, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    """The main method's sweep (top-level keys) plus every method in ``compare_methods``."""
    methods = [cfg.method] + [m for m in cfg.compare_methods if m != cfg.method]
    per_method, all_gens = {}, []
    for m in methods:
        per_method[m], gens = sweep(engine, questions, cfg, m)
        all_gens += gens
    unlimited = run_point(engine, questions, cfg, cfg.method, None)
    all_gens += unlimited
    main = per_method[cfg.method]
    report = {
        "method": cfg.method, **main, "methods": per_method,
        "unlimited": asdict(summarise(unlimited)),
        "accuracy_by_budget": {str(p["budget"]): p["accuracy"] for p in main["points"]},
        "questions": len(questions),
    }
    return report, all_gens
