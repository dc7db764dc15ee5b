"""Selection: s1's Algorithm 1, its diversity sampling and the paper's ablations, seeded.

``s1`` (Algorithm 1, the s1-32b default): phase 1 takes every AIME/GPQA example
the teacher answered correctly and every MATH example the teacher answered
correctly with a trace longer than ``phase1_min_trace_tokens``. Sources are s1's
exact ``source_type`` values (``phase1_correct_sources`` / ``phase1_long_sources``,
matched against the question's ``metadata.source_type``, else its source; a value
ending in '/' is a prefix, as s1's ``qfq/openaimath/<subject>``): ``qq8933/AIME_1983_2024``
is not ``AI-MO/NuminaMath-CoT/amc_aime``, MATH is not OlympiadBench's ``.../Math``.
The teacher is graded against a short reference answer by rule; against a reference
solution (``answer_format: solution``) by the LLM judge's recorded verdict
(``metadata.teacher_judged_correct``, as s1 graded with Claude). Phase 2 fills up to ``size`` with
``diversity``. If phase 1 alone exceeds ``size``, its longest traces are kept.
``diversity``: repeat until ``size`` are chosen: pick an MSC domain uniformly at
random, then one of its questions with probability proportional to 2^-rank,
rank = position when sorted by trace length, longest first.
Ablations: ``diversity_only`` (uniform within the domain), ``random``,
``longest`` and ``all``. Which pool each strategy draws from is
:data:`ABLATION_POOL` (the select stage reads it).

    chosen = select(examples, strategy="s1", size=1000, seed=0, selection=cfg.selection)
"""
from __future__ import annotations

import random
from bisect import bisect
from collections import defaultdict
from itertools import accumulate
from typing import Callable, Optional

from components.common.grading import grade_response
from components.config import SelectionConfig
from components.records import Example

# The paper's ablations isolate one criterion each, so they draw from the pool after the quality filter
# (and decontamination), before the difficulty filter; ``all`` is that whole pool (s1's "59K-full").
# s1 and diversity draw from the pool after every filter.
ABLATION_POOL = frozenset({"random", "longest", "diversity_only", "all"})


def _by_domain(examples: list[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.question.msc or "unknown"].append(ex)
    for items in groups.values():  # longest first, ties broken by id for determinism
        items.sort(key=lambda e: (-e.trace_tokens, e.question.id))
    return groups


def _domain_sampling(examples: list[Example], size: int, rng: random.Random, length_weighted: bool) -> list[Example]:
    groups = _by_domain(examples)
    longest = max((len(items) for items in groups.values()), default=0)
    cum = list(accumulate(2.0 ** -rank for rank in range(longest)))  # 2^-rank, shared by every domain
    chosen: list[Example] = []
    while len(chosen) < size:
        domains = sorted(d for d, items in groups.items() if items)
        if not domains:
            break
        items = groups[rng.choice(domains)]
        if length_weighted:
            # what rng.choices(weights=2^-rank) draws, in O(log n): same stream, same picks
            n = len(items)
            idx = bisect(cum, rng.random() * cum[n - 1], 0, n - 1)
        else:
            idx = rng.randrange(len(items))
        chosen.append(items.pop(idx))
    return chosen


def _diversity(examples, size, rng):
    return _domain_sampling(examples, size, rng, length_weighted=True)


def _diversity_only(examples, size, rng):
    return _domain_sampling(examples, size, rng, length_weighted=False)


def _random(examples, size, rng):
    return rng.sample(examples, min(size, len(examples)))


def _longest(examples, size, rng):
    return sorted(examples, key=lambda e: (-e.trace_tokens, e.question.id))[:size]


def _all(examples, size, rng):
    return list(examples)


def source_type(ex: Example) -> str:
    """s1's ``source_type`` of a question: its metadata's, else the source it was loaded from."""
    return str(ex.question.metadata.get("source_type") or ex.question.source)


def source_matches(names: list[str], value: str) -> bool:
    """Exact equality with one of ``names``; a name ending in '/' matches as a prefix."""
    return any(value == n or (n.endswith("/") and value.startswith(n)) for n in names)


def teacher_correct(ex: Example) -> bool:
    """Whether the teacher's answer agrees with the reference: by rule against a short answer (math-verify, or
    the option letter), by the LLM judge's recorded verdict against a reference solution (none: not correct)."""
    if not ex.trace.ok:
        return False
    if ex.question.metadata.get("answer_format") == "solution":
        return ex.question.metadata.get("teacher_judged_correct") is True
    return grade_response(ex.question, ex.trace.answer)[1]


def phase1(examples: list[Example], cfg: SelectionConfig) -> list[Example]:
    """Algorithm 1, phase 1: teacher-correct AIME/GPQA examples, and teacher-correct long MATH traces."""
    out = []
    for ex in examples:
        src = source_type(ex)
        take_all = source_matches(cfg.phase1_correct_sources, src)
        long_math = source_matches(cfg.phase1_long_sources, src) and ex.trace_tokens > cfg.phase1_min_trace_tokens
        if (take_all or long_math) and teacher_correct(ex):
            out.append(ex)
    return out


def _s1(examples, size, rng, cfg: Optional[SelectionConfig] = None):
    first = phase1(examples, cfg or SelectionConfig())
    if len(first) >= size:
        return _longest(first, size, rng)
    taken = {ex.question.id for ex in first}
    rest = [ex for ex in examples if ex.question.id not in taken]
    return first + _domain_sampling(rest, size - len(first), rng, length_weighted=True)


STRATEGIES: dict[str, Callable[..., list[Example]]] = {
    "s1": _s1, "diversity": _diversity, "diversity_only": _diversity_only, "random": _random,
    "longest": _longest, "all": _all,
}


def select(examples: list[Example], strategy: str, size: int, seed: int,
           selection: Optional[SelectionConfig] = None) -> list[Example]:
    """``size`` examples by ``strategy``; ``selection`` gives Algorithm 1's phase-1 thresholds (strategy s1)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"selection.strategy: {strategy!r} unknown; choose from {sorted(STRATEGIES)}")
    ordered = sorted(examples, key=lambda e: e.question.id)  # input order must not matter
    if strategy == "s1":
        return _s1(ordered, size, random.Random(seed), selection)
    return STRATEGIES[strategy](ordered, size, random.Random(seed))
