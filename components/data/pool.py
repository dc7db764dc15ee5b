"""Collect stage: the procedural question pool (and the held-out test set).

Seeded and reproducible; a ``malformed_fraction`` of rows is deliberately
broken the ways real scraped pools are (figure references, ASCII art,
inconsistent numbering) so the quality filter has something real to catch.

    questions = generate_pool(cfg.pool)
"""
from __future__ import annotations

import random

from components.config import PoolConfig, PoolSource
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


def _weighted_domains(domains: list[str], weights: dict[str, float]) -> tuple[list[str], list[float]]:
    if not weights:
        return domains, [1.0] * len(domains)
    return [d for d in domains if weights.get(d, 0) > 0], [weights[d] for d in domains if weights.get(d, 0) > 0]


def _check_domains(domains: list[str]) -> None:
    unknown = [d for d in domains if d not in FAMILIES]
    if unknown:
        raise ValueError(f"pool.domains: unknown domain(s) {unknown}; choose from {sorted(FAMILIES)}")


def _question(source: str, seed: int, i: int, p: Problem, rng: random.Random, malformed_fraction: float) -> Question:
    text, meta = p.text, {}
    if rng.random() < malformed_fraction:
        kind = rng.choice(MALFORMED_KINDS)
        text, meta = _malform(kind, p, rng), {"malformed": kind}
    return Question(id=f"{source}-{seed}-{i:06d}", source=source, question=text, answer=p.answer,
                    domain=p.domain, msc=MSC_BY_DOMAIN[p.domain], difficulty=p.difficulty, metadata=meta)


def generate_source(cfg: PoolConfig, src: PoolSource | None = None) -> list[Question]:
    """One procedural source: ``src.size`` questions, domains drawn by ``src.domain_weights`` (else uniform,
    cycled), difficulty uniform in the source's range (else the pool's). Each source has its own seed stream."""
    src = src or PoolSource()
    _check_domains(cfg.domains)
    name = src.name or "procedural"
    index = next((k for k, s in enumerate(cfg.sources) if s is src), 0)
    seed = cfg.seed + 1000 * index
    lo, hi = src.min_difficulty or cfg.min_difficulty, src.max_difficulty or cfg.max_difficulty
    names, weights = _weighted_domains(cfg.domains, src.domain_weights)
    rng = random.Random(seed)
    out = []
    for i in range(src.size or cfg.size):
        domain = rng.choices(names, weights)[0] if src.domain_weights else names[i % len(names)]
        p = FAMILIES[domain].generate(rng, rng.randint(lo, hi))
        out.append(_question(name, seed, i, p, rng, cfg.malformed_fraction))
    return out


def generate_pool(cfg: PoolConfig) -> list[Question]:
    """Every procedural source of the pool, in order (the other kinds are read by pool_sources.load_pool)."""
    procedural = [s for s in cfg.sources if s.kind == "procedural"] or [PoolSource()]
    return [q for src in procedural for q in generate_source(cfg, src)]


def generate_heldout(seed: int, size: int, domains: list[str], lo: int, hi: int) -> list[Question]:
    """A clean test set from a different seed, stratified: every (domain, difficulty) cell gets the same share
    (still decontaminated against the pool)."""
    _check_domains(domains)
    rng = random.Random(seed)
    out = []
    for i in range(size):
        domain = domains[i % len(domains)]
        difficulty = lo + (i // len(domains)) % (hi - lo + 1)
        out.append(_question("heldout", seed, i, FAMILIES[domain].generate(rng, difficulty), rng, 0.0))
    return out
