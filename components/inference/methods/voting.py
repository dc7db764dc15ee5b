"""Majority voting (s1's parallel baseline): N sampled runs per question, the most common final answer wins,
answers grouped by math-verify equivalence (``1/2`` and ``0.5`` vote together). Its sweep values are N
(``evaluate.methods.majority_voting.samples``); sample ``k`` is the same whatever N is (its own seed), so a sweep
draws its largest N once. Compute is every sample's thinking, summed."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from pydantic import Field, field_validator

from components.common.grading import extract_answer, grade
from components.inference.budget_forcing import ForcedResult
from components.inference.methods.base import Kind, Method, MethodSettings, Progress, positive_counts
from components.records import COMPUTE_FIELDS


def equivalent(a: str, b: str) -> bool:
    """Grading equivalence of two answers, from any thread (the server votes off the main thread)."""
    return grade(a, b)


def vote_groups(answers: Sequence[str], same: Optional[Callable[[str, str], bool]] = None) -> list[list[int]]:
    """Indices of ``answers`` grouped by ``same`` (default: math-verify equivalence) against each group's first
    member (empty answers vote for nothing), groups in order of first appearance."""
    same = same or equivalent
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if not a:
            continue
        for g in groups:
            if same(a, answers[g[0]]):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def vote(answers: Sequence[str]) -> str:
    """Most common answer, grouping equivalent forms (``1/2`` and ``0.5``); ties go to the first seen."""
    groups = vote_groups(answers)
    return answers[max(groups, key=len)[0]] if groups else ""


def combined(chosen: ForcedResult, samples: Sequence[ForcedResult], winner: str) -> ForcedResult:
    """One question's vote as a result: the sample ``chosen`` to represent it, answering ``winner`` (its own answer
    when nothing won), with every sample's compute summed and their number as its tries."""
    return chosen.model_copy(update={
        **{f: sum(getattr(r, f) for r in samples) for f in COMPUTE_FIELDS}, "tries": len(samples),
        "answer": f"Answer: {winner}" if winner else chosen.answer})


def voted(samples: list[list[ForcedResult]]) -> list[ForcedResult]:
    """Per question, the majority answer over ``samples`` (one list per sample), thinking tokens summed."""
    out = []
    for mine in zip(*samples):
        winner = vote([extract_answer(r.answer) for r in mine])
        first = next((r for r in mine if extract_answer(r.answer) == winner), mine[0])
        out.append(combined(first, mine, winner))
    return out


class VotingSettings(MethodSettings):
    samples: list[int] = Field(default_factory=lambda: [1, 2, 4], description="N: samples per question swept")

    @field_validator("samples")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return positive_counts(v, "sample counts")


class MajorityVoting(Method):
    name = "majority_voting"
    kind = Kind.PARALLEL
    Settings = VotingSettings
    value_label = "N="
    sweep_setting = "samples"
    samples_itself = True
    budgeted = False
    shares_sweep = True

    def values(self) -> list[int]:
        return sorted(self.settings.samples)

    def samples(self, engine, questions: Sequence[str], n: int) -> list[list[ForcedResult]]:
        """``n`` sampled runs over ``questions`` (sample ``k`` seeded ``seed + 1000 k``)."""
        prompts = self.prompts(engine, questions)
        return [engine.generate_forced(prompts, [self.forcing.spec(None)] * len(prompts), self.forcing.sampled(k))
                for k in range(n)]

    def combine(self, samples: list[list[ForcedResult]]) -> list[ForcedResult]:
        """The per-question answer of a set of samples (one list per sample)."""
        return voted(samples)

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        return self.run_sweep(engine, questions, [value], progress)[value]

    def run_sweep(self, engine, questions: Sequence[str], values: Sequence[Optional[int]], progress: Progress = None
                  ) -> dict[Optional[int], list[ForcedResult]]:
        """Every N from one set of max(N) samples (N votes over the first N)."""
        samples = self.samples(engine, questions, max(values))
        if progress:
            progress(len(questions))
        return {n: self.combine(samples[:n]) for n in values}

    def cost(self, questions: int, value: Optional[int]) -> int:
        return questions * (value or 1)
