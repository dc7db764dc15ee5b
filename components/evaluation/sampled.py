"""The ``sampled`` protocol: avg@k beside the paper's greedy sweep.

s1 reports one greedy run per question. Today's convention (DeepSeek-R1, open-r1) samples ``k`` answers per
question at temperature 0.6, top-p 0.95 and reports their mean accuracy (avg@k, i.e. pass@1 averaged over k),
with k by task (64 for AIME, 4 for MATH500, 8 for GPQA). Here the evaluation's main method runs at each budget
of ``evaluate.sampled.budgets`` (and without a budget, when the method answers without one), ``k`` times per
question, every sample with its own seed; each generation is recorded with its seed under the method's label
plus ``[sampled]``, so the page's per-question tables (k samples per question) give avg@k its question-bootstrap
interval and pass@k. Only a method that decodes one answer per thinking budget with the evaluation's decoding
can be sampled so (the registry's ``section_problems`` refuses any other before a model loads).

    section, records = sampled_sweep(engine, questions, cfg, k=4)
"""
from __future__ import annotations

from typing import Optional

from components.common.progress import progress_bar
from components.config import EvaluateConfig
from components.evaluation.statistics import accuracy, pass_at_k_score, per_question
from components.evaluation.sweep import forcing, graded
from components.inference.methods.registry import build
from components.records import Question

PROTOCOL = "sampled"


def sampled_label(method: str) -> str:
    """The method field of the sampled protocol's records (apart from the greedy sweep's)."""
    return f"{method}[{PROTOCOL}]"


def sampled_budgets(cfg: EvaluateConfig) -> list[Optional[int]]:
    """The budgets sampled at: ``sampled.budgets`` (else every budget), then no budget (None)."""
    return sorted(cfg.sampled.budgets or cfg.budgets) + [None]


def sampled_questions(questions: list[Question], cfg: EvaluateConfig) -> list[Question]:
    limit = cfg.sampled.question_limit
    return questions[:limit] if limit else questions


def sample_cost(cfg: EvaluateConfig, questions: int, k: int) -> int:
    """Generated sequences of the protocol on ``questions`` questions (a sampled run shares no thinking between
    budgets: one forced run per budget and sample)."""
    return min(questions, cfg.sampled.question_limit or questions) * k * len(sampled_budgets(cfg))


def sampled_sweep(engine, questions: list[Question], cfg: EvaluateConfig, k: int) -> tuple[dict, list[dict]]:
    """The main method at each sampled budget, ``k`` samples per question, all samples of a budget in one engine
    call (row ``j * n + i`` is sample ``j`` of question ``i``, seeded ``evaluate.seed + j * n + i``: every sample
    its own seed); the report section and the graded records, each with its seed."""
    proto, qs = cfg.sampled, sampled_questions(questions, cfg)
    label, budgets, n = sampled_label(cfg.method), sampled_budgets(cfg), len(qs)
    shared = forcing(cfg).model_copy(update={"temperature": proto.temperature, "top_p": proto.top_p})
    method = build(cfg.method, shared, cfg.methods.get(cfg.method), cfg.budgets, cfg.trust_remote_code)
    values = [b for b in budgets if b is not None or method.answers_unbudgeted]
    with progress_bar(f"evaluating ({label}, {k} samples)", total=n * k) as advance:
        by_value = method.run_sweep(engine, [q.question for q in qs] * k, values, progress=advance)
    records: list[dict] = []
    for value in values:
        gens = graded(qs * k, by_value[value], label, value)
        records += [{**g.model_dump(), "seed": cfg.seed + r} for r, g in enumerate(gens)]
    return sampled_section(records, cfg, k, n), records


def sampled_section(records: list[dict], cfg: EvaluateConfig, k: int, questions: int) -> dict:
    """The report's ``sampled`` section from the protocol's records: per budget, avg@k, pass@k and the average
    thinking tokens over every sample."""
    label, points = sampled_label(cfg.method), []
    for budget in sampled_budgets(cfg):
        rs = [r for r in records if r["method"] == label and r["budget"] == budget]
        if not rs:
            continue
        table = per_question(rs)
        points.append({"budget": budget, "accuracy": accuracy(table), "pass_at_k": pass_at_k_score(table, k),
                       "avg_thinking_tokens": sum(r["thinking_tokens"] for r in rs) / len(rs)})
    return {"protocol": PROTOCOL, "method": label, "k": k, "temperature": cfg.sampled.temperature,
            "top_p": cfg.sampled.top_p, "questions": questions, "points": points}
