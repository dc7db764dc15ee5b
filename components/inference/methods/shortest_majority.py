"""Shortest majority vote (Zeng et al., ACL 2025, arXiv 2502.12215): parallel samples as majority voting draws
them, but each group of equivalent answers scores its number of votes divided by the average thinking length of
its samples, so a short, common answer beats a long one held as often (correct chains of thought tend to be
shorter than wrong ones). Its sweep values are N (``evaluate.methods.shortest_majority.samples``); the samples are
majority voting's (same seeds), so the two differ only in the vote."""
from __future__ import annotations

from typing import Sequence

from components.common.grading import extract_answer
from components.inference.budget_forcing import ForcedResult
from components.inference.methods.voting import MajorityVoting, combined, vote_groups


def shortest_majority(answers: Sequence[str], lengths: Sequence[int]) -> int:
    """The index of the sample carrying the winning answer: groups of equivalent answers scored votes / mean
    thinking length (a length of 0 counts as 1), ties to the group seen first; its shortest sample represents it.
    -1 when no sample has an answer."""
    best, best_score = -1, -1.0
    for group in vote_groups(answers):
        mean = sum(max(lengths[i], 1) for i in group) / len(group)
        score = len(group) / mean
        if score > best_score:
            best, best_score = min(group, key=lambda i: lengths[i]), score
    return best


class ShortestMajority(MajorityVoting):
    name = "shortest_majority"

    def combine(self, samples: list[list[ForcedResult]]) -> list[ForcedResult]:
        out = []
        for mine in zip(*samples):
            answers = [extract_answer(r.answer) for r in mine]
            k = shortest_majority(answers, [r.thinking_tokens for r in mine])
            out.append(combined(mine[k], mine, answers[k]) if k >= 0 else combined(mine[0], mine, ""))
        return out
