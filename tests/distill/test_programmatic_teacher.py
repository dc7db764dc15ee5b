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
