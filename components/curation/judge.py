"""An LLM judge for answers whose reference is a whole solution (``metadata.answer_format: solution``: GPQA
explanations, letter answers, science and puzzle rows), as s1 graded them: the question, the attempt and the
reference solution to a chat model (s1: the same Claude model that classified domains), whose reply ends in
Yes or No. The verdict on the teacher's answer is recorded as ``metadata.teacher_judged_correct``; Algorithm 1's
phase 1 reads it (components/curation/selection.py).

    judged = await judge_teacher(examples, client)
"""
from __future__ import annotations

import asyncio

from components.common.chat_client import ApiError, ChatClient
from components.records import Example

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


def needs_judge(ex: Example) -> bool:
    return ex.trace.ok and ex.question.metadata.get("answer_format") == "solution"


async def judge_teacher(examples: list[Example], client: ChatClient) -> dict[str, int]:
    """Judge the teacher's answer of every example whose reference is a solution; records the verdict in place.
    Returns counts: judged, correct, and unjudged (a failed call or a reply without a verdict: no verdict is
    recorded, so phase 1 does not take it)."""
    todo = [ex for ex in examples if needs_judge(ex)]

    async def one(ex: Example) -> bool | None:
        try:
            reply = await client.chat(judge_messages(ex.question.question, ex.trace.answer, ex.question.answer))
        except ApiError:
            return None
        return parse_verdict(reply.content)
    verdicts = await asyncio.gather(*(one(ex) for ex in todo))
    for ex, verdict in zip(todo, verdicts):
        if verdict is not None:
            ex.question.metadata["teacher_judged_correct"] = verdict
    return {"judged": sum(v is not None for v in verdicts), "correct": sum(v is True for v in verdicts),
            "unjudged": sum(v is None for v in verdicts)}
