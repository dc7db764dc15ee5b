"""Procedural math problem families: question text, exact answer, worked steps.

Each family can (1) generate a question of a given difficulty, (2) parse its own
question text back into operands (so the programmatic teacher solves from the
text, like an API teacher would) and (3) write the worked solution as lines.
Difficulty is the number of digits, so the solution length grows with it.

    fam = FAMILIES["arithmetic"]; q = fam.generate(rng, difficulty=4)
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Problem:
    domain: str
    text: str
    answer: str
    difficulty: int


def _number(rng: random.Random, digits: int) -> int:
    lo = 10 ** (digits - 1) if digits > 1 else 0
    return rng.randint(lo, 10**digits - 1)


def addition_steps(a: int, b: int) -> list[str]:
    """Column addition from the right, one line per column.

    The first line restates the operands exactly as the question writes them
    ("596 + 880"), so copying them is a copy of an identical context. Every
    column line has the same shape, "x+y+carry=sum, carry c, so far S, left
    A + B": the carry term is always written (fixed positions for the digit
    sum), and the line restates what is left of both numbers and the digits
    found so far, so each step reads only the line before it.
    """
    left_a, left_b = str(a), str(b)
    width = max(len(left_a), len(left_b))
    left_a, left_b = left_a.zfill(width), left_b.zfill(width)
    lines, carry, so_far = [f"{left_a} + {left_b}"], 0, ""
    while left_a:
        x, y = int(left_a[-1]), int(left_b[-1])
        left_a, left_b = left_a[:-1], left_b[:-1]
        s = x + y + carry
        terms = f"{x}+{y}+{carry}"
        carry, so_far = s // 10, f"{s % 10}{so_far}"
        rest = f"{left_a} + {left_b}" if left_a else "none"
        lines.append(f"{terms}={s}, carry {carry}, so far {so_far}, left {rest}")
    if carry:
        lines.append(f"Write the final carry: {carry}{so_far}")
    return lines


def digit_sum_steps(n: int) -> list[str]:
    """Running total from the left; each line keeps the digits still to add."""
    digits = str(n)
    total, lines = int(digits[0]), [f"Start with {digits[0]}, rest {digits[1:]}"]
    for i in range(1, len(digits)):
        d = int(digits[i])
        rest = digits[i + 1:] or "none"
        lines.append(f"{total}+{d}={total + d}, rest {rest}")
        total += d
    return lines


RECHECK = "Wait, let me re-check: "


def _slip(line: str, rng: random.Random) -> str:
    """Corrupt the result of a step line (the number right after '=')."""
    def wrong(m: re.Match) -> str:
        value = int(m.group(1))
        return f"={value + rng.choice([-2, -1, 1, 2]) if value > 1 else value + 1}"
    return re.sub(r"=(\d+)", wrong, line, count=1)


def with_correction(lines: list[str], rng: random.Random, probability: float) -> list[str]:
    """With ``probability``, one step line slips (a wrong result) and the next line is
    "Wait, let me re-check: " followed by the step written right: the self-correction the
    programmatic teacher writes, and the pre-training corpus practises."""
    step_idx = [i for i, ln in enumerate(lines) if re.search(r"=\d", ln)]
    if step_idx and rng.random() < probability:
        i = rng.choice(step_idx)
        return lines[:i] + [_slip(lines[i], rng), f"{RECHECK}{lines[i]}"] + lines[i + 1:]
    return lines


@dataclass(frozen=True)
class Family:
    domain: str
    msc: str
    generate: Callable[[random.Random, int], Problem]
    parse: Callable[[str], Optional[tuple[int, ...]]]
    steps: Callable[..., list[str]]
    solve: Callable[..., int]
    intro: Callable[..., list[str]] = lambda *ops: []
    digits_over_difficulty: int = 0  # the digit sum's number has difficulty + 2 digits

    def difficulty_of(self, operands: tuple[int, ...]) -> int:
        """The difficulty ``generate`` used for these operands (digits of the longest operand)."""
        return max(1, len(str(max(operands))) - self.digits_over_difficulty)

    def solution_lines(self, operands: tuple[int, ...]) -> list[str]:
        return self.intro(*operands) + self.steps(*operands)


# Searched (not anchored, case-insensitive) so a teacher can still attempt a
# question wrapped in noise; the quality filter judges the wrapping.
_ADD_RE = re.compile(r"What is (\d+) \+ (\d+)\?", re.I)
_SOLVE_RE = re.compile(r"Solve for x: x - (\d+) = (\d+)\. What is x\?", re.I)
_DIGITS_RE = re.compile(r"What is the digit sum of (\d+)\?", re.I)
_COUNT_RE = re.compile(r"In how many ways can one of (\d+) chess or (\d+) go players be picked\?", re.I)


def _match_ints(pattern: re.Pattern) -> Callable[[str], Optional[tuple[int, ...]]]:
    def parse(text: str) -> Optional[tuple[int, ...]]:
        m = pattern.search(text)
        return tuple(int(g) for g in m.groups()) if m else None
    return parse


def _gen_add(rng: random.Random, d: int) -> Problem:
    a, b = _number(rng, d), _number(rng, d)
    return Problem("arithmetic", f"What is {a} + {b}?", str(a + b), d)


def _gen_solve(rng: random.Random, d: int) -> Problem:
    b, a = _number(rng, d), _number(rng, d)
    return Problem("algebra", f"Solve for x: x - {b} = {a}. What is x?", str(a + b), d)


def _gen_digits(rng: random.Random, d: int) -> Problem:
    n = _number(rng, d + 2)
    return Problem("number_theory", f"What is the digit sum of {n}?", str(sum(map(int, str(n)))), d)


def _gen_count(rng: random.Random, d: int) -> Problem:
    a, b = _number(rng, d), _number(rng, d)
    # Templates keep every 8-word window holding a number, so 8-gram
    # decontamination matches real overlap, not shared boilerplate.
    text = f"In how many ways can one of {a} chess or {b} go players be picked?"
    return Problem("combinatorics", text, str(a + b), d)


FAMILIES: dict[str, Family] = {
    "arithmetic": Family("arithmetic", "97", _gen_add, _match_ints(_ADD_RE), addition_steps, lambda a, b: a + b),
    "algebra": Family(
        "algebra", "08", _gen_solve, _match_ints(_SOLVE_RE),
        # operands restated in reading order (b before a): every copy from the question runs forwards
        addition_steps, lambda b, a: a + b,
        intro=lambda b, a: ["Add to both sides, so x is the sum."],
    ),
    "number_theory": Family("number_theory", "11", _gen_digits, _match_ints(_DIGITS_RE), digit_sum_steps,
                            lambda n: sum(map(int, str(n))), digits_over_difficulty=2),
    "combinatorics": Family(
        "combinatorics", "05", _gen_count, _match_ints(_COUNT_RE), addition_steps, lambda a, b: a + b,
        intro=lambda a, b: ["By the sum rule, add the two counts."],
    ),
}


def parse_any(text: str) -> Optional[tuple[Family, tuple[int, ...]]]:
    """Find the family whose question pattern matches ``text``."""
    for fam in FAMILIES.values():
        ops = fam.parse(text)
        if ops is not None:
            return fam, ops
    return None
