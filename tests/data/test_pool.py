"""The procedural pool and the held-out set."""
from collections import Counter

from components.config import PoolConfig
from components.data.pool import generate_heldout, generate_pool
from components.data.problems import parse_any


def test_pool_is_seeded_reproducible_and_diverse():
    cfg = PoolConfig(size=400, seed=11)
    a, b = generate_pool(cfg), generate_pool(cfg)
    assert [q.model_dump() for q in a] == [q.model_dump() for q in b]
    assert generate_pool(PoolConfig(size=400, seed=12))[0].question != a[0].question
    assert len({q.id for q in a}) == 400
    assert set(Counter(q.domain for q in a)) == {"arithmetic", "algebra", "number_theory", "combinatorics"}
    assert {q.msc for q in a} == {"97", "08", "11", "05"}
    assert {q.difficulty for q in a} == set(range(cfg.min_difficulty, cfg.max_difficulty + 1))


def test_pool_answers_are_exact():
    for q in generate_pool(PoolConfig(size=200, malformed_fraction=0.0)):
        family, ops = parse_any(q.question)
        assert family.domain == q.domain
        assert str(family.solve(*ops)) == q.answer


def test_pool_has_some_malformed_rows():
    pool = generate_pool(PoolConfig(size=1000, malformed_fraction=0.05))
    kinds = Counter(q.metadata.get("malformed") for q in pool if q.metadata.get("malformed"))
    assert set(kinds) == {"figure", "ascii_art", "numbering"}
    assert 20 <= sum(kinds.values()) <= 90


def test_heldout_is_a_different_clean_set():
    held = generate_heldout(6, 50, ["arithmetic", "algebra"], 3, 5)
    pool = {q.question for q in generate_pool(PoolConfig(size=500))}
    assert not any(q.metadata for q in held)
    assert all(3 <= q.difficulty <= 5 for q in held)
    assert not pool & {q.question for q in held}
