from collections import Counter

from components.config import PoolConfig, TeacherConfig
from components.data.pool import generate_heldout, generate_pool
from components.data.problems import FAMILIES, addition_steps, parse_any
from components.distill.teachers import ProgrammaticTeacher, build_teacher
from components.records import Question


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


def test_addition_trace_is_correct_step_by_step():
    assert addition_steps(958, 67) == [
        "958 + 067",
        "8+7+0=15, carry 1, so far 5, left 95 + 06",
        "5+6+1=12, carry 1, so far 25, left 9 + 0",
        "9+0+1=10, carry 1, so far 025, left none",
        "Write the final carry: 1025",
    ]


def test_trace_length_grows_with_difficulty():
    teacher = ProgrammaticTeacher(TeacherConfig(slip_probability=0.0))
    fam = FAMILIES["arithmetic"]
    import random
    rng = random.Random(0)
    lengths = []
    for d in (1, 3, 6):
        p = fam.generate(rng, d)
        t = teacher.solve(Question(id=f"q{d}", source="t", question=p.text, answer=p.answer))
        lengths.append(len(t.thinking))
        assert t.answer == f"Answer: {p.answer}"
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_teacher_slips_then_corrects_with_wait():
    teacher = build_teacher(TeacherConfig(slip_probability=1.0))
    q = Question(id="x", source="t", question="What is 4831 + 2967?", answer="7798")
    t = teacher.solve(q)
    lines = t.thinking.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("Wait, let me re-check: "))
    corrected = lines[i].removeprefix("Wait, let me re-check: ")
    assert lines[i - 1] != corrected and corrected in addition_steps(4831, 2967)
    assert t.answer == "Answer: 7798"


def test_teacher_is_order_independent_and_records_failures():
    teacher = build_teacher(TeacherConfig(slip_probability=0.5))
    qs = generate_pool(PoolConfig(size=40))
    fwd = {q.id: teacher.solve(q) for q in qs}
    rev = {q.id: teacher.solve(q) for q in qs[::-1]}
    assert fwd == rev
    bad = teacher.solve(Question(id="b", source="t", question="Prove Fermat's last theorem.", answer=""))
    assert not bad.ok and "could not parse" in bad.error
