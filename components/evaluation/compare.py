"""``s1flow compare A B``: two evaluation results on the same questions, compared question by question.

A side is an eval samples file (the JSONL the evaluate stage writes to ``data/<profile>/eval_samples.jsonl``:
one graded sample per line with ``task``, ``method``, ``budget``, ``seed``, ``question_id`` and ``correct``) or
the id of an MLflow run that logged it (the register stage logs it as the artifact ``eval_samples.jsonl``).
Each side picks one point of its file: a task, a method and a budget (``None``: the no-budget run). Every sample
of that point counts (k seeds: avg@k). The result: each side's accuracy with its 95% interval, the difference
B - A with its paired interval, and the paired test's p-value (:mod:`components.evaluation.statistics`).

    result = compare("a.jsonl", "b.jsonl", Point(budget=240), Point(budget=240))
    print(format_result(result))
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

from components.evaluation.statistics import (
    QuestionMismatch,
    accuracy,
    accuracy_interval,
    common_questions,
    paired_comparison,
    pass_at_k_score,
    per_question,
    samples_per_question,
)
from components.method_index import REFERENCE
from components.records import COMPUTE_FIELDS

SAMPLES_ARTIFACT = "eval_samples.jsonl"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
LARGEST = "largest"  # a point's default budget: the largest the method was run at
FIELDS = ("task", "method", "budget", "seed", "question_id", "correct", "failed", *COMPUTE_FIELDS)


class CompareError(ValueError):
    """A comparison that cannot be made as asked (a missing file or run, a point not in the results)."""


Budget = Union[int, None, str]


@dataclass(frozen=True)
class Point:
    """Which samples of a results file to score: ``task`` (None: the file's first, the headline), ``method`` and
    ``budget`` (None: the no-budget run; :data:`LARGEST`: the largest budget the method was run at)."""

    task: Optional[str] = None
    method: str = REFERENCE
    budget: Budget = LARGEST


def parse_budget(text: Optional[str]) -> Budget:
    """A budget given on the command line: an integer, ``none`` (the no-budget run) or nothing (the largest)."""
    if text is None:
        return LARGEST
    if text.strip().lower() in ("none", "no budget", "unlimited"):
        return None
    try:
        return int(text)
    except ValueError:
        raise CompareError(f"--budget {text!r}: give a thinking budget (an integer) or 'none' for the no-budget run") \
            from None


def read_samples(path: Path, required: bool = True) -> list[dict]:
    """The scoring fields and token counts of every sample in an eval samples file (the thinking text is not
    kept); a file without samples is refused when ``required``."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise CompareError(f"{path}:{n}: not a JSON line ({e.msg}); expected the evaluate stage's "
                                   "eval_samples.jsonl") from None
            if not isinstance(r, dict) or "question_id" not in r or ("correct" not in r and not r.get("failed")):
                raise CompareError(f"{path}:{n}: a sample needs question_id and correct; expected the evaluate "
                                   "stage's eval_samples.jsonl")
            out.append({**{k: r.get(k) for k in FIELDS}, "method": r.get("method", REFERENCE)})
    if not out and required:
        raise CompareError(f"{path}: no samples")
    return out


def fetch_run_samples(run_id: str, tracking_uri: Optional[str], dst: Path) -> Path:
    """The run's ``eval_samples.jsonl`` artifact, downloaded under ``dst``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    where = tracking_uri or mlflow.get_tracking_uri()
    try:
        client.get_run(run_id)
    except MlflowException:
        raise CompareError(f"unknown MLflow run id {run_id} at {where} (give --tracking-uri, or the profile "
                           "whose tracking store holds it)") from None
    if SAMPLES_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        raise CompareError(f"MLflow run {run_id} has no {SAMPLES_ARTIFACT} artifact (the register stage logs it; "
                           "compare the run's eval samples file instead)")
    return Path(client.download_artifacts(run_id, SAMPLES_ARTIFACT, str(dst)))


def load_source(source: str, tracking_uri: Optional[str] = None) -> list[dict]:
    """The samples of ``source``: an eval samples file, or an MLflow run id."""
    path = Path(source)
    if path.is_file():
        return read_samples(path)
    if path.exists():
        raise CompareError(f"{source}: a directory; give an eval samples file (eval_samples.jsonl) or an MLflow run id")
    if not RUN_ID.match(source):
        raise CompareError(f"{source}: no such file, and not an MLflow run id (32 hexadecimal characters)")
    with tempfile.TemporaryDirectory() as tmp:
        return read_samples(fetch_run_samples(source, tracking_uri, Path(tmp)))


def _budget_label(b: Any) -> str:
    return "none" if b is None else str(b)


def select(records: list[dict], point: Point, label: str) -> tuple[dict, Point]:
    """The per-question table of ``point`` in ``records`` and the point resolved (task and budget filled in);
    ``label`` names the side in errors."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    task = point.task if point.task is not None else tasks[0]
    if task not in tasks:
        raise CompareError(f"{label}: task {task!r} not in the results; they have: {', '.join(map(str, tasks))}")
    in_task = [r for r in records if r["task"] == task]
    methods = list(dict.fromkeys(r["method"] for r in in_task))
    if point.method not in methods:
        raise CompareError(f"{label}: method {point.method!r} not run on task {task!r}; the results have: "
                           f"{', '.join(map(str, methods))}")
    budgets = sorted({r["budget"] for r in in_task if r["method"] == point.method},
                     key=lambda b: (b is None, b or 0))
    budget = point.budget
    if budget == LARGEST:
        numeric = [b for b in budgets if b is not None]
        budget = numeric[-1] if numeric else None
    if budget not in budgets:
        raise CompareError(f"{label}: budget {_budget_label(budget)} not in the results for task {task!r}, method "
                           f"{point.method!r}; they have: {', '.join(_budget_label(b) for b in budgets)}")
    table = per_question(in_task, method=point.method, budget=budget)
    if not table:
        raise CompareError(f"{label}: every sample of task {task!r}, method {point.method!r}, budget "
                           f"{_budget_label(budget)} is a failed request; nothing to score")
    return table, replace(point, task=task, budget=budget)


def side_summary(table: dict, point: Point, source: str) -> dict:
    """One side: where it came from, what was scored, its accuracy with interval (and pass@k with k > 1)."""
    k = samples_per_question(table)
    interval = accuracy_interval(table)
    out = {"source": source, "task": point.task, "method": point.method, "budget": point.budget,
           "questions": len(table), "k": k, "accuracy": accuracy(table),
           "interval": {"low": interval.low, "high": interval.high, "method": interval.method}}
    if k > 1:
        out[f"pass@{k}"] = pass_at_k_score(table, k)
    return out


def compare(source_a: str, source_b: str, point_a: Point, point_b: Point, tracking_uri: Optional[str] = None,
            common_only: bool = False) -> dict:
    """Both sides scored on the questions they share (all of them, unless ``common_only``) and compared."""
    table_a, point_a = select(load_source(source_a, tracking_uri), point_a, "A")
    table_b, point_b = select(load_source(source_b, tracking_uri), point_b, "B")
    try:
        ids = common_questions(table_a, table_b, allow_subset=common_only)
    except QuestionMismatch as e:
        raise CompareError(str(e)) from None
    table_a, table_b = {q: table_a[q] for q in ids}, {q: table_b[q] for q in ids}
    paired = paired_comparison(table_a, table_b)
    return {"questions": len(ids), "a": side_summary(table_a, point_a, source_a),
            "b": side_summary(table_b, point_b, source_b),
            "difference": {"estimate": paired.difference, "low": paired.low, "high": paired.high,
                           "confidence": 0.95},
            "p_value": paired.p_value, "test": paired.test,
            "a_better": paired.a_only, "b_better": paired.b_only}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def format_result(result: dict) -> str:
    """The comparison as a text table."""
    rows = [("", "source", "task", "method", "budget", "k", "accuracy [95% interval]")]
    for side in ("a", "b"):
        s = result[side]
        iv = s["interval"]
        acc = f"{_pct(s['accuracy'])} [{_pct(iv['low'])}, {_pct(iv['high'])}] ({iv['method']})"
        key = f"pass@{s['k']}"
        extra = [f"{key} {_pct(s[key])}"] if key in s else []
        rows.append((side.upper(), s["source"], str(s["task"]), s["method"], _budget_label(s["budget"]),
                     str(s["k"]), "; ".join([acc, *extra])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    d = result["difference"]
    lines += ["",
              f"B - A: {_pts(d['estimate'])} points [{_pts(d['low'])}, {_pts(d['high'])}] (paired bootstrap, 95%)",
              f"p = {result['p_value']:.4g} ({result['test']}); B better on {result['b_better']} questions, "
              f"A better on {result['a_better']}",
              f"questions: {result['questions']} (paired)"]
    return "\n".join(lines)
