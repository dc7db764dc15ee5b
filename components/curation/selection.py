"""Selection: s1's diversity sampling and the paper's ablations, seeded.

``diversity`` (s1K): repeat until ``size`` are chosen: pick an MSC domain
uniformly at random, then one of its questions with probability proportional
to 2^-rank, rank = position when sorted by trace length, longest first.
Ablations: ``diversity_only`` (uniform within the domain), ``random``,
``longest`` and ``all``.

    chosen = select(examples, strategy="diversity", size=1000, seed=0)
"""
from __future__ import annotations

import random
from bisect import bisect
from collections import defaultdict
from itertools import accumulate
from typing import Callable

from components.records import Example


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


STRATEGIES: dict[str, Callable[[list[Example], int, random.Random], list[Example]]] = {
    "diversity": _diversity, "diversity_only": _diversity_only, "random": _random,
    "longest": _longest, "all": _all,
}


def select(examples: list[Example], strategy: str, size: int, seed: int) -> list[Example]:
    if strategy not in STRATEGIES:
        raise ValueError(f"selection.strategy: {strategy!r} unknown; choose from {sorted(STRATEGIES)}")
    ordered = sorted(examples, key=lambda e: e.question.id)  # input order must not matter
    return STRATEGIES[strategy](ordered, size, random.Random(seed))
