"""The programmatic teacher of the embedded profile (no network, no cost).

It solves the question from its text, writes real column-by-column work whose
length grows with the number of digits, sometimes slips and then writes
"Wait, let me re-check" with the correction, and ends with the answer. The
teacher simulator (components/distill/teachers/simulator.py) serves it over HTTP.

    trace = ProgrammaticTeacher(cfg.teacher).solve(question)
"""
from __future__ import annotations

import hashlib
import random

from components.config import TeacherConfig
from components.data.problems import parse_any, with_correction
from components.records import Question, Trace

ANSWER_PREFIX = "Answer: "


def _rng_for(seed: int, question_id: str) -> random.Random:
    # Per-question RNG: the trace does not depend on order or on which worker ran it.
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


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
        lines = with_correction(family.solution_lines(operands), rng, self.cfg.slip_probability)
        thinking = "\n".join(lines)
        answer = f"{ANSWER_PREFIX}{family.solve(*operands)}"
        return Trace(question_id=question.id, teacher=self.name, thinking=thinking, answer=answer,
                     prompt_tokens=len(question.question.split()),
                     completion_tokens=len(thinking.split()) + len(answer.split()))
