"""One compute axis for every method: accuracy against the compute each point spent per question, with intervals.

The points are those of the compute-matched comparison (``eval.json`` → ``compute_matched.methods.<m>.points``,
each method with its ``kind`` and ``value_label``); the numbers come from the eval samples behind them
(:func:`components.evaluation.compare.read_samples`), on the comparison's questions:

* compute of a question: its thinking tokens plus its probe tokens (trial answers of answer-probing
  controllers), averaged over the question's samples (k seeds); a parallel method's record already sums its
  samples or expanded nodes. A point's compute is the mean over questions.
* accuracy: the mean over questions of each question's share correct.
* both with a 95% percentile bootstrap over questions (:func:`components.evaluation.statistics.bootstrap_interval`,
  10,000 resamples, seed 0: the same samples give the same interval; both intervals use the same draws).

The best method at each compute level (every compute any point reached): among all points spending no more,
the most accurate (ties: the cheaper), against the runner-up (the most accurate point of any other method within
the same compute), paired over the questions both scored: exact McNemar when both have one sample per question,
else the sign-flip permutation test (:func:`components.evaluation.statistics.paired_comparison`); significant
at p < 0.05.

What the samples lack is said, never guessed: a point without samples keeps ``eval.json``'s numbers and gets
no interval, a point missing some questions is scored on the rest and says which.

    axis = compute_axis(json.loads(eval_json.read_text()), read_samples(samples_path))
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from components.evaluation.metrics import point_compute
from components.evaluation.statistics import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    QuestionMismatch,
    QuestionTable,
    accuracy,
    bootstrap_interval,
    paired_comparison,
    per_question,
    question_means,
)
from components.records import record_compute

ALPHA = 1 - CONFIDENCE
INTERVAL = (f"{CONFIDENCE:.0%} percentile bootstrap over questions ({RESAMPLES:,} resamples, seed {SEED})")
TEST = ("paired over the questions both points scored: exact McNemar (one sample per question), else sign-flip "
        f"permutation; significant at p < {ALPHA:.2f}")
TOLERANCE = 1e-9


def setting(method_report: dict, value: Any) -> str:
    """``N=4``: a sweep value with its method's label (``B=`` thinking budget when the report gives none)."""
    return f"{method_report.get('value_label', 'B=')}{value}"


def matched_questions(cm: dict, records: list[dict], task: Any) -> list[str]:
    """The question ids of the compute-matched comparison: ``question_ids`` when the report lists them, else the
    first ``questions`` ids in the order the evaluation asked them (the comparison runs on the first
    ``ablation_limit`` questions). A question's place is the earliest it holds in any point's samples, so a
    question missing from one point keeps its place from another."""
    if cm.get("question_ids"):
        return [str(q) for q in cm["question_ids"]]
    methods = set(cm.get("methods") or {})
    order: dict[tuple, list[str]] = {}
    for r in records:
        if r.get("task") == task and r.get("method") in methods:
            ids = order.setdefault((r["method"], r.get("budget")), [])
            if str(r["question_id"]) not in ids:
                ids.append(str(r["question_id"]))
    rank: dict[str, int] = {}
    for ids in order.values():
        for i, q in enumerate(ids):
            rank[q] = min(rank.get(q, i), i)
    return sorted(rank, key=rank.__getitem__)[: cm.get("questions", len(rank))]


def _compute_per_question(records: list[dict]) -> Optional[dict[str, float]]:
    """Each question's mean compute over its samples (thinking, probe and discarded tokens); None when a sample has
    no count."""
    totals: dict[str, list[float]] = {}
    for r in records:
        if (compute := record_compute(r)) is None:
            return None
        totals.setdefault(str(r["question_id"]), []).append(compute)
    return {q: sum(v) / len(v) for q, v in totals.items()}


def _point(method: str, report: dict, p: dict, records: list[dict], ids: list[str],
           expected: int) -> tuple[dict, QuestionTable]:
    """One point of the axis (JSON values) and its per-question table (empty without samples) on the
    comparison's ``expected`` questions (``ids``: those the samples name)."""
    wanted = set(ids)
    rs = [r for r in records if r.get("method") == method and r.get("budget") == p["budget"]
          and str(r["question_id"]) in wanted and not r.get("failed")]
    table = per_question(rs)
    row = {"method": method, "kind": report.get("kind", "sequential"), "setting": setting(report, p["budget"]),
           "value": p["budget"], "questions": len(table), "of": expected,
           "compute": point_compute(p), "compute_low": None, "compute_high": None,
           "accuracy": p["accuracy"], "accuracy_low": None, "accuracy_high": None, "missing": None}
    if not table:
        row["missing"] = "no samples: eval.json's numbers, no interval"
        return row, table
    scored = sorted(table)
    acc = bootstrap_interval(question_means(table))
    row.update(accuracy=accuracy(table), accuracy_low=acc.low, accuracy_high=acc.high)
    compute = _compute_per_question(rs)
    notes = []
    if compute is None:
        notes.append("samples without token counts: eval.json's compute, no interval")
    else:
        per_q = np.array([compute[q] for q in scored])
        iv = bootstrap_interval(per_q)  # the same seed and size as the accuracy's: the same questions drawn
        row.update(compute=float(per_q.mean()), compute_low=iv.low, compute_high=iv.high)
    absent = [q for q in ids if q not in table]
    if len(table) < expected:
        named = f" ({', '.join(absent[:3])}{', …' if len(absent) > 3 else ''})" if absent else ""
        notes.append(f"no samples for {expected - len(table)} of {expected} questions{named}: scored on the "
                     f"other {len(table)}")
    row["missing"] = "; ".join(notes) or None
    return row, table


def _best(candidates: list[tuple[dict, QuestionTable]]) -> Optional[tuple[dict, QuestionTable]]:
    """The most accurate point (ties: the cheaper, then the earlier listed)."""
    return max(candidates, key=lambda c: (c[0]["accuracy"], -c[0]["compute"]), default=None)


def best_at_each_level(scored: list[tuple[dict, QuestionTable]]) -> list[dict]:
    """At each compute level a point reached: the best point spending no more, and the runner-up (the best point
    of another method within it) with the paired test between them."""
    usable = [c for c in scored if c[0]["accuracy"] is not None and c[0]["compute"] is not None]
    rows = []
    for level in sorted({c[0]["compute"] for c in usable}):
        within = [c for c in usable if c[0]["compute"] <= level + TOLERANCE]
        best = _best(within)
        runner = _best([c for c in within if c[0]["method"] != best[0]["method"]])
        b = best[0]
        row = {"compute_level": level, "method": b["method"], "setting": b["setting"], "compute": b["compute"],
               "accuracy": b["accuracy"], "accuracy_low": b["accuracy_low"], "accuracy_high": b["accuracy_high"],
               "runner_up": None, "runner_up_setting": None, "runner_up_accuracy": None, "difference": None,
               "difference_low": None, "difference_high": None, "paired_questions": None, "p_value": None,
               "test": None, "significant": None, "note": None}
        if runner is None:
            row["note"] = "no other method spends this little"
            rows.append(row)
            continue
        r = runner[0]
        row.update(runner_up=r["method"], runner_up_setting=r["setting"], runner_up_accuracy=r["accuracy"],
                   difference=b["accuracy"] - r["accuracy"])
        if not best[1] or not runner[1]:
            row["note"] = "no samples to pair"
        else:
            try:
                paired = paired_comparison(runner[1], best[1], allow_subset=True)
            except QuestionMismatch:
                row["note"] = "no question scored by both"
            else:
                row.update(difference=paired.difference, difference_low=paired.low, difference_high=paired.high,
                           paired_questions=paired.questions, p_value=paired.p_value, test=paired.test,
                           significant=bool(paired.difference > 0 and paired.p_value < ALPHA))
        rows.append(row)
    return rows


def compute_axis(ev: dict, records: Optional[list[dict]]) -> Optional[dict]:
    """The compute axis of an evaluation report and its samples (None or [] when there are none): every point,
    the best method at each compute level, and what is missing. None when the report has no compute-matched
    comparison."""
    cm = ev.get("compute_matched")
    if not cm:
        return None
    task, records = ev.get("task"), [r for r in records or [] if r.get("task") == ev.get("task")]
    ids = matched_questions(cm, records, task)
    expected = cm.get("questions", len(ids))
    missing = []
    if not records:
        missing.append("no eval samples for this task: the numbers are eval.json's, without intervals")
    scored = []
    for m, report in cm["methods"].items():
        points = [_point(m, report, p, records, ids, expected) for p in report.get("points") or []]
        if not points:
            missing.append(f"`{m}`: no points in eval.json")
        elif records and not any(t for _, t in points):
            missing.append(f"`{m}`: no samples (eval.json's numbers, no intervals)")
        elif records:
            missing += [f"`{m}` {p['setting']}: {p['missing']}" for p, _ in points if p["missing"]]
        scored += points
    return {"task": task, "questions": expected, "interval": INTERVAL, "test": TEST,
            "points": [p for p, _ in scored], "best": best_at_each_level(scored), "missing": missing}
