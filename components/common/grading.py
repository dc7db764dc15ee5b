"""Answer extraction and grading by symbolic equivalence (math-verify).

Policy: an answer is correct when math-verify finds it equivalent to the gold
answer (``\\frac{14}{3}`` = ``14/3``, ``90^\\circ`` = ``90``); math-verify's
numeric tolerance also accepts a decimal close to a fraction
(``4.6666666667`` for ``14/3``), which we keep, as s1's evaluation does.

    grade(extract_answer("Answer: 7798"), "7798") -> True
"""
from __future__ import annotations

import re
from functools import lru_cache

from math_verify import parse, verify

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_LINE = re.compile(r"(?:final\s+answer|answer)\s*[:：]\s*(.+)", re.I)


def last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def extract_answer(text: str) -> str:
    """The final answer in ``text``: the last ``\\boxed{}``, else the last 'Answer:' line."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hits = _ANSWER_LINE.findall(text)
    if hits:
        return hits[-1].strip().rstrip(".").strip()
    return text.strip().splitlines()[-1].strip() if text.strip() else ""


@lru_cache(maxsize=65536)
def _parsed(expr: str):
    # Wrap in $...$ so LaTeX like \frac{14}{3} is read as math, not prose.
    return parse(f"${expr}$") or parse(expr)


def grade(predicted: str, gold: str) -> bool:
    if not predicted.strip():
        return False
    if predicted.strip() == gold.strip():
        return True
    try:
        g, p = _parsed(gold), _parsed(predicted)
        return bool(g and p and verify(g, p))
    except Exception:
        return False


_CHOICE = re.compile(r"\(?\b([A-D])\b\)?")


def grade_choice(predicted: str, gold_letter: str) -> bool:
    """Multiple choice (GPQA): the first standalone option letter in the prediction."""
    m = _CHOICE.search(predicted.strip())
    return bool(m) and m.group(1) == gold_letter.strip().upper()


def grade_question(question, predicted: str) -> bool:
    """Grade by the question's kind (``metadata.kind``: math or multiple_choice)."""
    if question.metadata.get("kind") == "multiple_choice":
        return grade_choice(predicted, question.answer)
    return grade(predicted, question.answer)
