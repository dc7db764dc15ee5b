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
import re

from components.config import TeacherConfig
from components.data.problems import parse_any
from components.records import Question, Trace

ANSWER_PREFIX = "Answer: "


def _rng_for(seed: int, question_id: str) -> random.Random:
    # Per-question RNG: the trace does not depend on order or on which worker ran it.
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _slip(line: str, rng: random.Random) -> str:
    """Corrupt the result of a step line (the number right after '=')."""
    def wrong(m: re.Match) -> str:
        value = int(m.group(1))
        return f"={value + rng.choice([-2, -1, 1, 2]) if value > 1 else value + 1}"
    return re.sub(r"=(\d+)", wrong, line, count=1)


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
        lines = family.solution_lines(operands)
        step_idx = [i for i, ln in enumerate(lines) if re.search(r"=\d", ln)]
        if step_idx and rng.random() < self.cfg.slip_probability:
            i = rng.choice(step_idx)
            lines = lines[:i] + [_slip(lines[i], rng), f"Wait, let me re-check: {lines[i]}"] + lines[i + 1:]
        thinking = "\n".join(lines)
        answer = f"{ANSWER_PREFIX}{family.solve(*operands)}"
        return Trace(question_id=question.id, teacher=self.name, thinking=thinking, answer=answer,
                     prompt_tokens=len(question.question.split()),
                     completion_tokens=len(thinking.split()) + len(answer.split()))
