"""Teachers write reasoning traces; the distill stage runs one over the pool.

Every teacher implements :class:`Teacher` (``solve(question) -> Trace``); the
registry maps ``teacher.kind`` in params to a builder. The programmatic teacher
solves the question from its text, writes real column-by-column work whose
length grows with the number of digits, sometimes slips and then writes
"Wait, let me re-check" with the correction, and ends with the answer.

    teacher = build_teacher(cfg.teacher); trace = teacher.solve(question)
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Callable, Protocol

from components.config import TeacherConfig
from components.problems import parse_any
from components.records import Question, Trace

ANSWER_PREFIX = "Answer: "


class Teacher(Protocol):
    name: str

    def solve(self, question: Question) -> Trace: ...


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


TEACHERS: dict[str, Callable[[TeacherConfig], Teacher]] = {"programmatic": ProgrammaticTeacher}


def build_teacher(cfg: TeacherConfig) -> Teacher:
    if cfg.kind not in TEACHERS:
        raise ValueError(f"teacher.kind: {cfg.kind!r} has no client in this build; "
                         f"available: {sorted(TEACHERS)} (API teachers arrive with the curation issue)")
    return TEACHERS[cfg.kind](cfg)


def distill(questions: list[Question], teacher: Teacher, progress: Callable | None = None) -> list[Trace]:
    """Run the teacher over every question; failures are kept as ``ok=False`` traces."""
    traces = []
    for q in questions:
        try:
            traces.append(teacher.solve(q))
        except Exception as e:  # a failing call is recorded, never loses the batch
            traces.append(Trace(question_id=q.id, teacher=teacher.name, ok=False, error=repr(e)))
        if progress:
            progress()
    return traces
