"""The programmatic teacher: step-by-step traces, slips corrected with "Wait", failures recorded."""
import random

from components.config import PoolConfig, TeacherConfig
from components.data.pool import generate_pool
from components.data.problems import FAMILIES, addition_steps
from components.distill.teachers import ProgrammaticTeacher, build_teacher
from components.records import Question


def test_trace_length_grows_with_difficulty():
    teacher = ProgrammaticTeacher(TeacherConfig(slip_probability=0.0))
    fam = FAMILIES["arithmetic"]
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


def _both_teachers(slip: float = 0.15, seed: int = 103):
    standard = ProgrammaticTeacher(TeacherConfig(slip_probability=slip, seed=seed))
    return standard, ProgrammaticTeacher(TeacherConfig(slip_probability=slip, seed=seed, style="thorough"))


def test_the_thorough_teacher_is_right_longer_and_corrects_itself_more_on_the_same_questions():
    """The s1.1-style teacher (teacher.style: thorough) against the standard one on one pool: every final answer is
    the problem's, every re-check restates a true step, and its traces are longer with more re-checks."""
    standard, thorough = _both_teachers()
    qs = generate_pool(PoolConfig(size=400, malformed_fraction=0.0))
    solved = [(q, standard.solve(q), thorough.solve(q)) for q in qs]
    assert all(s.ok and t.ok for _, s, t in solved)
    for q, _, t in solved:
        assert t.answer == f"Answer: {q.answer}"
        lines = t.thinking.splitlines()
        assert lines[-1].startswith("Check: ") and lines[-1].split("=")[-1].strip() == q.answer
        for i, line in enumerate(lines):
            if line.startswith("Wait, let me re-check: "):
                assert lines[i - 1] != line.removeprefix("Wait, let me re-check: ")  # the slip, then the step right
        assert sum(ln.startswith("Wait") for ln in lines) <= 2
    sides = list(zip(*solved))[1:]  # the standard teacher's traces, the thorough teacher's
    rechecks = [sum(trace.thinking.count("Wait, let me re-check") for trace in side) for side in sides]
    mean_chars = [sum(len(trace.thinking) for trace in side) / len(solved) for side in sides]
    assert rechecks[1] > 2 * rechecks[0] and mean_chars[1] > 1.2 * mean_chars[0]


def test_the_thorough_teacher_is_deterministic_per_seed_and_order_independent():
    _, thorough = _both_teachers()
    qs = generate_pool(PoolConfig(size=60))
    assert {q.id: thorough.solve(q) for q in qs} == {q.id: thorough.solve(q) for q in qs[::-1]}
    _, other_seed = _both_teachers(seed=7)
    assert [thorough.solve(q).thinking for q in qs] != [other_seed.solve(q).thinking for q in qs]


def test_a_digit_sum_check_adds_the_digits_and_without_slips_only_the_check_is_added():
    standard, thorough = _both_teachers(slip=0.0)
    q = Question(id="d", source="t", question="What is the digit sum of 50719?", answer="22")
    assert thorough.solve(q).thinking == standard.solve(q).thinking + "\nCheck: 5+0+7+1+9=22"


def test_style_is_the_programmatic_teachers_and_keys_its_own_shard_set():
    import pytest

    from components.config import ConfigError, parse_profile
    from components.distill.distillation import teacher_fingerprint
    with pytest.raises(ConfigError, match="style: only the programmatic teacher has a style"):
        parse_profile({"teacher": {"kind": "openai", "style": "thorough"}}, "tiny")
    standard = TeacherConfig()
    assert teacher_fingerprint(standard) != teacher_fingerprint(standard.model_copy(update={"style": "thorough"}))
