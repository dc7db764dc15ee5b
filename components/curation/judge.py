"""An LLM judge for answers whose reference is a whole solution (``metadata.answer_format: solution``: GPQA
explanations, letter answers, science and puzzle rows), as s1 graded them: the question, the attempt and the
reference solution to a chat model (s1: the same Claude model that classified domains), whose reply ends in
Yes or No. :func:`judge` rules on a list of (question, attempt, reference) items concurrently; it grades

- the teacher's answers: the verdict is recorded as ``metadata.teacher_judged_correct``, which Algorithm 1's
  phase 1 reads (components/curation/selection.py);
- the difficulty filter's students: their attempts on such rows come back as text (an attempt cut off before
  it wrote an answer has not solved the question and is never sent), and a student solved a question when the
  judge says Yes. A failed call or a reply without a verdict counts as not solved: the question stays hard.

    judged = await judge_teacher(examples, client)
    judged = await judge_students(examples, {"base": {qid: attempt_text}}, client)
"""
from __future__ import annotations

import asyncio

from components.common.chat_client import ApiError, ChatClient
from components.common.grading import attempt_answer
from components.records import Example, Question

JUDGE_INSTRUCTION = (
    "You grade an attempt at a science or mathematics problem. You are given the problem, the attempt and the "
    "correct answer. Decide whether the attempt is correct by comparing it with the correct answer: when the "
    "correct answer ends in a number or a choice there must be no ambiguity; when it is a whole line of reasoning, "
    "judge whether the attempt reasons correctly to a correct result. Explain briefly, then end your reply with a "
    "line holding only Yes or No.")


def judge_messages(question: str, attempt: str, solution: str) -> list[dict]:
    return [{"role": "system", "content": JUDGE_INSTRUCTION},
            {"role": "user", "content": f"## Problem\n{question}\n\n## Attempt\n{attempt}\n\n## Correct answer\n{solution}"}]


def parse_verdict(reply: str) -> bool | None:
    """True / False from the reply's last line (Yes / No), None when it ends in neither."""
    lines = [line.strip().strip("*.").lower() for line in reply.strip().splitlines() if line.strip()]
    return {"yes": True, "no": False}.get(lines[-1]) if lines else None


def solution_reference(question: Question) -> bool:
    """Whether the question's reference is a whole solution, which no rule can compare an answer with."""
    return question.metadata.get("answer_format") == "solution"


def needs_judge(ex: Example) -> bool:
    return ex.trace.ok and solution_reference(ex.question)


def attempt_to_judge(text: str, finished: bool) -> str:
    """What the judge is sent of a student's attempt: its text, or '' when the attempt gave no answer (its token
    limit cut it off before it wrote one, as ``attempt_answer`` reads it): such an attempt has not solved the
    question and is never sent."""
    return text if attempt_answer(text, finished) else ""


def verdict_counts(verdicts: list[bool | None]) -> dict[str, int]:
    return {"judged": sum(v is not None for v in verdicts), "correct": sum(v is True for v in verdicts),
            "unjudged": sum(v is None for v in verdicts)}


async def judge(items: list[tuple[str, str, str]], client: ChatClient) -> list[bool | None]:
    """The verdict on each (question, attempt, reference), asked concurrently within the client's limits: True /
    False, or None when the call failed or the reply ended in no verdict. An empty (or blank) attempt answers
    nothing: it is False without a call."""
    async def one(question: str, attempt: str, reference: str) -> bool | None:
        if not attempt.strip():
            return False
        try:
            reply = await client.chat(judge_messages(question, attempt, reference))
        except ApiError:
            return None
        return parse_verdict(reply.content)
    return list(await asyncio.gather(*(one(*item) for item in items)))


async def judge_teacher(examples: list[Example], client: ChatClient) -> dict[str, int]:
    """Judge the teacher's answer of every example whose reference is a solution; records the verdict in place.
    Returns counts: judged, correct, and unjudged (a failed call or a reply without a verdict: no verdict is
    recorded, so phase 1 does not take it). An empty answer is never sent: it is recorded as not correct."""
    todo = [ex for ex in examples if needs_judge(ex)]
    verdicts = await judge([(ex.question.question, ex.trace.answer, ex.question.answer) for ex in todo], client)
    for ex, verdict in zip(todo, verdicts):
        if verdict is not None:
            ex.question.metadata["teacher_judged_correct"] = verdict
    return verdict_counts(verdicts)


async def judge_students(examples: list[Example], attempts: dict[str, dict[str, str]],
                         client: ChatClient) -> dict[str, dict[str, int]]:
    """Judge each student's attempts (student -> question id -> text) on the examples whose reference is a
    solution, setting ``student_correct[student]`` in place: True only on the judge's Yes. Per student: judged,
    correct, unjudged (a failed call or no verdict: counted as not solved, so the question stays hard) and
    cut_off (no attempt to send: cut off before an answer, not solved)."""
    todo = [ex for ex in examples if solution_reference(ex.question)]
    asked = [(student, ex) for student, texts in attempts.items() for ex in todo if texts.get(ex.question.id)]
    verdicts = await judge([(ex.question.question, attempts[student][ex.question.id], ex.question.answer)
                            for student, ex in asked], client)
    for ex in todo:
        for student in attempts:
            ex.student_correct[student] = False
    for (student, ex), verdict in zip(asked, verdicts):
        ex.student_correct[student] = verdict is True
    out: dict[str, dict[str, int]] = {}
    for student in attempts:
        mine = [v for (s, _), v in zip(asked, verdicts) if s == student]
        out[student] = {**verdict_counts(mine), "cut_off": len(todo) - len(mine)}
    return out
