"""REBASE's ``programmatic`` process reward: the procedural world's verifier, registered by name.

A line of thinking is right where it stands when it is the worked solution's
next line (:mod:`components.data.problems`); a wrong line followed by "Wait,
let me re-check: <right line>" is a correction, not an error. Importing this
module registers the reward, so ``evaluate.methods.rebase.reward: programmatic`` finds it.

    reward = build_reward("programmatic"); reward.score("What is 958 + 67?", lines)
"""
from __future__ import annotations

from typing import Sequence

from components.data.problems import RECHECK, parse_any
from components.inference.rebase import register_reward


class ProgrammaticProcessReward:
    """The share of a partial trace's lines that are right where they stand (0.5 for a question the world
    cannot parse, or no lines yet)."""

    name = "programmatic"

    def score(self, question: str, steps: Sequence[str]) -> float:
        hit = parse_any(question)
        if hit is None or not steps:
            return 0.5
        family, ops = hit
        reference = family.solution_lines(ops)
        j, good, pending_error = 0, 0, False
        for line in steps:
            line = line.strip()
            if j < len(reference) and line == reference[j]:
                good, j, pending_error = good + 1, j + 1, False
            elif line.startswith(RECHECK) and j < len(reference) and line[len(RECHECK):] == reference[j]:
                good, j = good + 1 + pending_error, j + 1  # a correction redeems the slip before it
                pending_error = False
            else:
                pending_error = True
        return good / len(steps)


register_reward(ProgrammaticProcessReward())
