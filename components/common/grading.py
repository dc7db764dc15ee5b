"""Answer extraction and grading by symbolic equivalence (math-verify).

Policy: an answer is correct when math-verify finds it equivalent to the gold
answer (``\\frac{14}{3}`` = ``14/3``, ``90^\\circ`` = ``90``); math-verify's
numeric tolerance also accepts a decimal close to a fraction
(``4.6666666667`` for ``14/3``), which we keep, as s1's evaluation does.

Multiple choice (GPQA) reads the *final* choice of the response: the last
``\\boxed{C}``, else the last "Answer: C" / "answer is (C)", else the last
parenthesised "(C)", else a response that is just the letter.
:func:`grade_response` is the one entry every path uses (in-process sweep, Serve
sweep, Algorithm 1's teacher check): it grades by the question's kind.
:data:`GRADER_VERSION` goes into evaluation run keys, so a grading change never
mixes with samples graded under other rules.

    grade(extract_answer("Answer: 7798"), "7798") -> True
    grade_response(question, "... so the answer is (C)") -> ("C", True)
"""
from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from math_verify import parse, verify


def _math_verify_version() -> str:
    try:
        return version("math-verify")
    except PackageNotFoundError:
        return "unknown"


GRADER_VERSION = f"s1flow-grading-2/math-verify-{_math_verify_version()}"

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


def attempt_answer(text: str, finished: bool) -> str:
    """The answer an attempt gave: ``extract_answer``, except that an attempt its token limit cut off
    (``finished`` false) before it wrote a final answer (a ``\\boxed{}`` or an 'Answer:' line) gave none: its
    last line is working, not an answer (a restated "55722 + 53366" would otherwise grade as the sum)."""
    if finished or last_boxed(text) is not None or _ANSWER_LINE.search(text):
        return extract_answer(text)
    return ""


# Off the main thread math-verify's SIGALRM timeouts cannot be set (every comparison would fail), so there
# they are off and answers longer than this are compared as plain strings, bounding a comparison's cost.
MAX_OFF_MAIN_CHARS = 200


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@lru_cache(maxsize=65536)
def _parsed(expr: str):
    # Wrap in $...$ so LaTeX like \frac{14}{3} is read as math, not prose.
    return parse(f"${expr}$") or parse(expr)


def _parsed_off_main(expr: str):
    return parse(f"${expr}$", parsing_timeout=None) or parse(expr, parsing_timeout=None)


def grade(predicted: str, gold: str) -> bool:
    """Symbolic equivalence (math-verify), from any thread."""
    if not predicted.strip():
        return False
    if predicted.strip() == gold.strip():
        return True
    try:
        if _on_main_thread():
            g, p = _parsed(gold), _parsed(predicted)
            return bool(g and p and verify(g, p))
        if len(predicted) > MAX_OFF_MAIN_CHARS or len(gold) > MAX_OFF_MAIN_CHARS:
            return False
        quiet = logging.getLogger("math_verify")
        level, quiet.level = quiet.level, logging.ERROR  # it warns on every call that the timeout is off
        try:
            g, p = _parsed_off_main(gold), _parsed_off_main(predicted)
            return bool(g and p and verify(g, p, timeout_seconds=None))
        finally:
            quiet.level = level
    except Exception:
        return False


_BOXED_CHOICE = re.compile(r"^\s*(?:\\text\{|\\mathrm\{|\\textbf\{)?\s*\(?([A-D])\)?\s*\}?\s*[.]?\s*$")
_ANSWER_CHOICE = re.compile(r"(?i:answer)\s*(?:is|:|：)\s*[:：]?\s*(?i:option\s*)?\(?([A-D])\b\)?")
_PAREN_CHOICE = re.compile(r"\(([A-D])\)")
_ONLY_CHOICE = re.compile(r"^\s*\(?([A-D])\)?\s*[.]?\s*$")


def extract_choice(text: str) -> str:
    """The final option letter of a multiple-choice response ('' when there is none)."""
    boxed = last_boxed(text)
    if boxed is not None and (m := _BOXED_CHOICE.match(boxed)):
        return m.group(1)
    for pattern in (_ANSWER_CHOICE, _PAREN_CHOICE):
        hits = pattern.findall(text)
        if hits:
            return hits[-1]
    m = _ONLY_CHOICE.match(text)
    return m.group(1) if m else ""


def grade_choice(predicted: str, gold_letter: str) -> bool:
    """Multiple choice (GPQA): the final option letter of the prediction equals the gold letter."""
    letter = extract_choice(predicted)
    return bool(letter) and letter == gold_letter.strip().upper()


def is_multiple_choice(question) -> bool:
    return question.metadata.get("kind") == "multiple_choice"


def grade_question(question, predicted: str) -> bool:
    """Grade an extracted answer by the question's kind (``metadata.kind``: math or multiple_choice)."""
    if is_multiple_choice(question):
        return grade_choice(predicted, question.answer)
    return grade(predicted, question.answer)


def grade_response(question, text: str) -> tuple[str, bool]:
    """(predicted, correct) for a whole response, by the question's kind: the one grading entry point."""
    if is_multiple_choice(question):
        letter = extract_choice(text)
        return letter, bool(letter) and letter == question.answer.strip().upper()
    predicted = extract_answer(text)
    return predicted, grade(predicted, question.answer)
