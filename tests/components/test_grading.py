import json
from pathlib import Path

import pytest

from components.common.grading import extract_answer, grade

EVAL = Path(__file__).resolve().parents[1] / "fixtures/eval"


@pytest.mark.parametrize("pred,gold", [
    ("14/3", r"\frac{14}{3}"), ("90", r"90^\circ"), (r"(3, \pi/2)", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"3\sqrt{13}", r"\sqrt{117}"), ("7798", "7798"), ("0.5", r"\frac{1}{2}"),
])
def test_equivalent_forms_are_accepted(pred, gold):
    assert grade(pred, gold)


@pytest.mark.parametrize("pred,gold", [("7797", "7798"), ("", "5"), ("15/3", r"\frac{14}{3}"), ("x", "3")])
def test_wrong_answers_are_rejected(pred, gold):
    assert not grade(pred, gold)


def test_extraction():
    assert extract_answer(r"so \boxed{\frac{1}{2}} and later \boxed{\dfrac{3}{4}}") == r"\dfrac{3}{4}"
    assert extract_answer(r"\boxed{\left( 3, \frac{\pi}{2} \right)}") == r"\left( 3, \frac{\pi}{2} \right)"
    assert extract_answer("thinking...\nAnswer: 7798") == "7798"
    assert extract_answer("Final Answer: 12.") == "12"
    assert extract_answer("") == ""


def _rows(name):
    path = EVAL / name
    return [json.loads(l) for l in path.open()]


def test_aime24_gold_answers_in_several_forms():
    for r in _rows("aime24.jsonl"):
        gold = r["answer"]
        n = int(gold)
        for form in (gold, f"{n}.0", rf"\boxed{{{n}}}", f"0{n}" if n < 100 else f"{n}.00"):
            assert grade(extract_answer(form), gold), (form, gold)
        assert not grade(str(n + 1), gold)


def test_math500_gold_answers_graded_against_themselves_and_rejected_when_perturbed():
    rows = _rows("math500.jsonl")
    ok = sum(grade(extract_answer(f"Answer: {r['answer']}"), r["answer"]) for r in rows)
    assert ok >= 0.97 * len(rows)
    fracs = [r for r in rows if r["answer"].startswith(r"\frac{") and r["answer"].count("{") == 2][:10]
    assert fracs
    for r in fracs:
        num, den = r["answer"][6:].split("}{")
        den = den.rstrip("}")
        assert grade(f"{num}/{den}", r["answer"]) and grade(rf"\dfrac{{{num}}}{{{den}}}", r["answer"])
    ints = [r for r in rows if r["answer"].isdigit()][:30]
    for r in ints:
        assert not grade(str(int(r["answer"]) + 1), r["answer"])
