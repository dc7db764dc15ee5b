"""The programmatic teacher of the embedded profile (no network, no cost).

It solves the question from its text, writes real column-by-column work whose
length grows with the number of digits, sometimes slips and then writes
"Wait, let me re-check" with the correction, and ends with the answer. The
teacher simulator (components/distill/teachers/simulator.py) serves it over HTTP.

``teacher.style: thorough`` is a second, stronger teacher in the way DeepSeek-R1's traces differ from
Gemini's (s1.1 against s1): the same work, but every step may slip (``slip_probability`` each, up to
:data:`THOROUGH_MAX_RECHECKS` re-checks per trace) and the trace closes by checking its result in one line
("Check: 4831 + 2967 = 7798"): longer, with more self-correction, always ending at the right answer.

    trace = ProgrammaticTeacher(cfg.teacher).solve(question)
"""
from __future__ import annotations

import hashlib
import random
import re

from components.config import TeacherConfig
from components.data.problems import Family, parse_any, with_correction
from components.records import Question, Trace

ANSWER_PREFIX = "Answer: "
CHECK_PREFIX = "Check: "
THOROUGH_MAX_RECHECKS = 2  # re-checks a thorough trace writes at most (keeps it inside the tiny SFT block)
_STEP = re.compile(r"=\d")  # a line with a computed result: the lines a slip can hit


def _rng_for(seed: int, question_id: str) -> random.Random:
    # Per-question RNG: the trace does not depend on order or on which worker ran it.
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def thorough_lines(lines: list[str], rng: random.Random, probability: float,
                   limit: int = THOROUGH_MAX_RECHECKS) -> list[str]:
    """Each step line slips with ``probability`` (at most ``limit`` of them), each slip followed by its re-check
    (:func:`~components.data.problems.with_correction` on that line)."""
    out, slips = [], 0
    for line in lines:
        if slips < limit and _STEP.search(line) and rng.random() < probability:
            out += with_correction([line], rng, 1.0)
            slips += 1
        else:
            out.append(line)
    return out


def check_line(family: Family, operands: tuple[int, ...], answer: int) -> str:
    """The closing check of a thorough trace: the whole computation in one line, against the result."""
    if family.domain == "number_theory":
        return f"{CHECK_PREFIX}{'+'.join(str(operands[0]))}={answer}"
    return f"{CHECK_PREFIX}{' + '.join(map(str, operands))} = {answer}"


class ProgrammaticTeacher:
    """A deterministic teacher for the embedded profile (no network, no cost)."""

    def __init__(self, cfg: TeacherConfig):
        self.name = cfg.model
        self.cfg = cfg

    async def attempt(self, question: Question) -> Trace:
        return self.solve(question)

    def solve(self, question: Question) -> Trace:
        hit = parse_any(question.question)
        if hit is None:
            return Trace(question_id=question.id, teacher=self.name, ok=False,
                         error="teacher could not parse the question", raw=question.question)
        family, operands = hit
        rng = _rng_for(self.cfg.seed, question.id)
        result = family.solve(*operands)
        if self.cfg.style == "thorough":
            lines = thorough_lines(family.solution_lines(operands), rng, self.cfg.slip_probability)
            lines.append(check_line(family, operands, result))
        else:
            lines = with_correction(family.solution_lines(operands), rng, self.cfg.slip_probability)
        thinking = "\n".join(lines)
        answer = f"{ANSWER_PREFIX}{result}"
        return Trace(question_id=question.id, teacher=self.name, thinking=thinking, answer=answer,
                     prompt_tokens=len(question.question.split()),
                     completion_tokens=len(thinking.split()) + len(answer.split()))
