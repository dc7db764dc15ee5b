"""Evaluation: budget-forcing sweep over thinking budgets on a held-out set.

For each budget the model thinks under ``max_thinking_tokens=budget`` (plus
one run capped only by ``unlimited_thinking_tokens``); answers are graded with
math-verify. The base model answers in its own chat format as the reference.
Produces per-sample records, per-budget points, Control/Scaling/Performance
and the scaling-curve PNG.

    report = evaluate_sweep(engine, questions, cfg.evaluate)
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

from components.config import EvaluateConfig
from components.filters.difficulty import student_attempts
from components.formatting import thinking_prompt
from components.grading import extract_answer, grade
from components.inference.budget_forcing import BudgetSpec
from components.inference.hf_engine import Sampling
from components.metrics import Run, SweepPoint, sweep_metrics
from components.progress import progress_bar
from components.records import Example, Generation, Question, Trace


def budget_spec(cfg: EvaluateConfig, budget: Optional[int]) -> BudgetSpec:
    return BudgetSpec(max_thinking_tokens=budget, min_thinking_tokens=cfg.min_thinking_tokens,
                      num_waits=cfg.num_waits, wait_strings=tuple(cfg.wait_strings),
                      final_answer_prefix=cfg.final_answer_prefix, max_answer_tokens=cfg.max_answer_tokens)


def run_budget(engine, questions: list[Question], cfg: EvaluateConfig, budget: Optional[int]) -> list[Generation]:
    prompts = [thinking_prompt(engine.tokenizer, q.question) for q in questions]
    spec = budget_spec(cfg, budget)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    label = f"budget {budget}" if budget is not None else "no budget"
    with progress_bar(f"evaluating ({label})", total=len(prompts)) as advance:
        results = engine.generate_forced(prompts, [spec] * len(prompts), sampling, progress=advance)
    out = []
    for q, p, r in zip(questions, prompts, results):
        predicted = extract_answer(r.answer)
        out.append(Generation(
            question_id=q.id, budget=budget, prompt=p, thinking=r.thinking, answer=r.answer,
            thinking_tokens=r.thinking_tokens, answer_tokens=r.answer_tokens, waits_used=r.waits_used,
            hit_budget=r.hit_budget, predicted=predicted, gold=q.answer, correct=grade(predicted, q.answer),
        ))
    return out


def summarise(generations: list[Generation]) -> SweepPoint:
    n = len(generations)
    return SweepPoint(budget=generations[0].budget, avg_thinking_tokens=sum(g.thinking_tokens for g in generations) / n,
                      accuracy=sum(g.correct for g in generations) / n)


def base_model_accuracy(engine, questions: list[Question], max_new_tokens: int) -> float:
    """The base model answering in its own chat format, no thinking phase (s1's baseline)."""
    examples = [Example(question=q, trace=Trace(question_id=q.id, teacher="none")) for q in questions]
    with progress_bar("evaluating base model", total=len(examples)) as advance:
        solved = student_attempts(engine, examples, max_new_tokens, progress=advance)
    return sum(solved) / len(solved)


def evaluate_sweep(engine, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    all_gens: list[Generation] = []
    points: list[SweepPoint] = []
    runs: list[Run] = []
    for budget in sorted(cfg.budgets):
        gens = run_budget(engine, questions, cfg, budget)
        all_gens += gens
        points.append(summarise(gens))
        runs += [Run(g.thinking_tokens, cfg.min_thinking_tokens, budget) for g in gens]
    unlimited = run_budget(engine, questions, cfg, None)
    all_gens += unlimited
    report = {
        "points": [asdict(p) for p in points],
        "unlimited": asdict(summarise(unlimited)),
        **sweep_metrics(points, runs),
        "accuracy_by_budget": {str(p.budget): p.accuracy for p in points},
        "questions": len(questions),
    }
    return report, all_gens


def plot_scaling(report: dict, path: str | Path, title: str = "Budget forcing on the held-out set") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = report["points"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot([p["avg_thinking_tokens"] for p in pts], [100 * p["accuracy"] for p in pts], "o-",
            label="SFT + budget forcing")
    for p in pts:
        ax.annotate(f"B={p['budget']}", (p["avg_thinking_tokens"], 100 * p["accuracy"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    u = report["unlimited"]
    ax.plot([u["avg_thinking_tokens"]], [100 * u["accuracy"]], "s", label="SFT, no budget")
    if report.get("base_accuracy") is not None:
        ax.axhline(100 * report["base_accuracy"], ls="--", color="gray", label="base model (no thinking)")
    ax.set_xlabel("average thinking tokens")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
