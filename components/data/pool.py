"""Collect stage: the procedural question pool (and the held-out test set).

Seeded and reproducible; a ``malformed_fraction`` of rows is deliberately
broken the ways real scraped pools are (figure references, ASCII art,
inconsistent numbering) so the quality filter has something real to catch.

    questions = generate_pool(cfg.pool)
"""
from __future__ import annotations

import random

from components.config import PoolConfig
from components.data.domains import MSC_BY_DOMAIN
from components.data.problems import FAMILIES, Problem
from components.records import Question

MALFORMED_KINDS = ("figure", "ascii_art", "numbering")


def _malform(kind: str, p: Problem, rng: random.Random) -> str:
    if kind == "figure":
        return f"As shown in the figure above, {p.text[0].lower()}{p.text[1:]}"
    if kind == "ascii_art":
        return "+---+---+---+\n|   | x |   |\n+---+---+---+\n" + p.text
    other = FAMILIES["arithmetic"].generate(rng, p.difficulty).text
    return f"(1) {p.text} (3) {other}"


def _questions(source: str, seed: int, size: int, domains: list[str], lo: int, hi: int,
               malformed_fraction: float = 0.0) -> list[Question]:
    unknown = [d for d in domains if d not in FAMILIES]
    if unknown:
        raise ValueError(f"pool.domains: unknown domain(s) {unknown}; choose from {sorted(FAMILIES)}")
    rng = random.Random(seed)
    out = []
    for i in range(size):
        fam = FAMILIES[domains[i % len(domains)]]
        p = fam.generate(rng, rng.randint(lo, hi))
        text, meta = p.text, {}
        if rng.random() < malformed_fraction:
            kind = rng.choice(MALFORMED_KINDS)
            text, meta = _malform(kind, p, rng), {"malformed": kind}
        out.append(Question(
            id=f"{source}-{seed}-{i:06d}", source=source, question=text, answer=p.answer,
            domain=p.domain, msc=MSC_BY_DOMAIN[p.domain], difficulty=p.difficulty, metadata=meta,
        ))
    return out


def generate_pool(cfg: PoolConfig) -> list[Question]:
    return _questions("procedural", cfg.seed, cfg.size, cfg.domains, cfg.min_difficulty,
                      cfg.max_difficulty, cfg.malformed_fraction)


def generate_heldout(seed: int, size: int, domains: list[str], lo: int, hi: int) -> list[Question]:
    """A clean test set from a different seed (still decontaminated against the pool)."""
    return _questions("heldout", seed, size, domains, lo, hi)
