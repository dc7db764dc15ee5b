"""s1flow's questions and grading inside lm-evaluation-harness, for the s1 tasks in this directory.

Each task's ``process_docs`` turns its dataset's rows into the questions s1flow's evaluation asks, through
s1flow's own task loader (:func:`components.data.tasks.load_task`): the same question text, GPQA's options
shuffled per question as s1flow shuffles them and the option letter as the gold answer. ``process_results``
grades a response as s1flow's evaluation does (:func:`components.common.grading.grade_response`): the last
``\\boxed{}`` or "Answer:" line, compared with the gold answer by math-verify; for GPQA the one option letter
the response commits to. So lm-eval's ``exact_match`` is the accuracy s1flow reports for the same responses.

lm-eval imports this file by path: run ``lm_eval`` from the project's environment, where ``components`` is
importable (``.venv/bin/lm_eval``).
"""
from __future__ import annotations

from typing import Iterable, Optional

import datasets

from components.common.grading import grade_response
from components.data.tasks import load_task
from components.records import Question


def s1_docs(task: str, rows: Iterable[dict], config: Optional[str] = None) -> datasets.Dataset:
    """The rows of s1flow task ``task`` (one dataset config of it: ``config``) as the questions s1flow asks."""
    rows = list(rows)

    def loader(_dataset: str, name: Optional[str], **_kw) -> list[dict]:
        return rows if config in (None, name) else []  # a task of several configs: only this one's rows

    questions = load_task(task, hf_loader=loader)
    return datasets.Dataset.from_list([{"id": q.id, "question": q.question, "answer": q.answer,
                                        "kind": q.metadata.get("kind", "math")} for q in questions])


def aime24_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("aime24", rows)


def aime25_i_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("aime25", rows, "AIME2025-I")


def aime25_ii_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("aime25", rows, "AIME2025-II")


def math500_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("math500", rows)


def gpqa_diamond_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("gpqa_diamond", rows)


def hmmt_feb25_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("hmmt_feb25", rows)


def brumo25_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("brumo25", rows)


def aime26_docs(rows: Iterable[dict]) -> datasets.Dataset:
    return s1_docs("aime26", rows)


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``exact_match``: 1 when s1flow grades the response (the answer after the thinking) correct."""
    question = Question(id=str(doc["id"]), source="lm_eval", question=doc["question"], answer=str(doc["answer"]),
                        metadata={"kind": doc["kind"]})
    _, correct = grade_response(question, results[0] or "")
    return {"exact_match": int(correct)}
