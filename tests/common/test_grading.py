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


@pytest.mark.parametrize("text,letter", [
    ("A careful check gives (C)", "C"), ("Answer: C", "C"), (r"so \boxed{C}", "C"), (r"\boxed{\text{D}}", "D"),
    ("The answer is (C).", "C"), ("(B)", "B"), ("B", "B"), ("Options (A) and (B) fail, so it is (C).", "C"),
    ("Answer: A. Option (B) was tempting.", "A"), ("The answer is a prime, namely (D)", "D"),
])
def test_multiple_choice_reads_the_final_choice(text, letter):
    from components.common.grading import extract_choice, grade_choice
    assert extract_choice(text) == letter
    assert grade_choice(text, letter) and not grade_choice(text, "A" if letter != "A" else "B")


def test_multiple_choice_without_a_choice_is_wrong():
    from components.common.grading import grade_choice
    assert not grade_choice("I am not sure about any of them", "A") and not grade_choice("", "A")


def test_one_grading_function_by_kind_on_the_in_process_path(monkeypatch):
    """GPQA through the in-process sweep is graded by its final option letter, not as math."""
    import importlib
    from types import SimpleNamespace

    from components.config import EvaluateConfig
    from components.records import Question
    sweep = importlib.import_module("components.evaluation.sweep")  # the package exports a function 'sweep'
    qs = [Question(id="g", source="gpqa_diamond", question="Noble gas?\n\n(A) Iron\n(B) Neon", answer="B",
                   metadata={"kind": "multiple_choice"}),
          Question(id="m", source="math500", question="1/2 + 1/2?", answer="1", metadata={"kind": "math"})]
    answers = {"Noble gas?\n\n(A) Iron\n(B) Neon": "Iron is a metal; a careful check gives (B)", "1/2 + 1/2?": r"\boxed{1}"}

    class Answering:  # the method run_point builds, answering each question from the table above
        def run(self, engine, prompts, budget, progress=None):
            return [SimpleNamespace(thinking="t", answer=answers[p], thinking_tokens=3, answer_tokens=2, waits_used=0,
                                    hit_budget=False, probe_tokens=0, discarded_tokens=0) for p in prompts]
    monkeypatch.setattr(sweep, "method", lambda cfg, name: Answering())
    gens = sweep.run_point(None, qs, EvaluateConfig(), "budget_forcing", 8)
    assert [(g.predicted, g.correct) for g in gens] == [("B", True), ("1", True)]


def test_grading_works_off_the_main_thread_and_does_not_poison_the_main_thread():
    """math-verify's timeouts need SIGALRM (main thread only); servers grade on other threads."""
    import threading
    out = {}
    t = threading.Thread(target=lambda: out.update(r=(grade("0.5", "1/2"), grade(r"\frac{14}{3}", "14/3"),
                                                      grade("3", "1/2"))))
    t.start()
    t.join()
    assert out["r"] == (True, True, False)
    assert grade("0.5", "1/2") and not grade("3", "1/2")


def test_an_attempt_cut_off_before_its_answer_gave_none():
    from components.common.grading import attempt_answer
    working = "Add to both sides, so x is the sum.\n55722 + 53366"        # the restated sum, cut off
    assert grade(extract_answer(working), "109088")                       # the last line would grade as the sum
    assert attempt_answer(working, finished=False) == ""
    assert not grade(attempt_answer(working, finished=False), "109088")
    assert attempt_answer(working + "\nAnswer: 109088\n2+", finished=False) == "109088"  # answered, then cut off
    assert attempt_answer("so \\boxed{7} and then", finished=False) == "7"
    assert attempt_answer("109088", finished=True) == "109088"            # a bare reply that ended by itself


def test_a_pathological_expression_gets_a_bounded_not_equal_and_the_pool_goes_on():
    """A central binomial coefficient of a million-digit size keeps math-verify busy for its whole 5 s alarm. In the
    pool the comparison is killed at the pool's limit (None: not graded), and the next comparison gets a fresh
    child."""
    import time

    from components.common.grading import GradingPool, bounded_equal
    slow = r"\binom{4000000}{2000000}"
    pool = GradingPool(timeout_s=1.0)
    try:
        assert pool.grade("1/2", "0.5") is True  # starts the child (its start is not counted in the limit)
        t = time.monotonic()
        assert pool.grade(slow, "2") is None
        assert time.monotonic() - t < 3 and pool.timeouts == 1
        assert pool.grade(r"\frac{14}{3}", "14/3") is True and pool.grade("3", "1/2") is False
        same = bounded_equal(pool, time.monotonic() + 30)
        assert not same(slow, "2") and same("2", " 2 ")
        spent = bounded_equal(pool, time.monotonic() - 1)  # past the vote's deadline: identical strings only
        assert spent("0.5", "0.5") and not spent("0.5", "1/2")
    finally:
        pool.close()


@pytest.mark.parametrize("expr", [r"9^{9^{9}}", "9^9^9", "2**3**4", r"2^{100000}", r"(10^{6})!", "123456!",
                                  "1" * 1001])
def test_an_explosive_answer_is_compared_as_a_string_at_once(expr):
    """An exponent tower's value has hundreds of millions of digits, and big-integer arithmetic in C does not
    answer math-verify's alarm: it is never evaluated, on any path."""
    import time

    from components.common.grading import explosive
    assert explosive(expr)
    t = time.monotonic()
    assert not grade(expr, "2") and not grade("2", expr) and grade(expr, expr)
    assert time.monotonic() - t < 1


@pytest.mark.parametrize("expr", [r"2^{10}", r"3^{2024}", r"10^{-6}", r"(n+1)!", "5!", r"2^{n}\cdot 3^{m}",
                                  r"\sqrt{2}^{3}", r"a^{2}b^{3}", r"\binom{10}{3}", r"e^{i\pi}"])
def test_ordinary_powers_and_factorials_are_still_graded_symbolically(expr):
    from components.common.grading import explosive
    assert not explosive(expr)


def test_no_gold_answer_of_the_shipped_eval_sets_is_explosive():
    from components.common.grading import explosive
    answers = [r["answer"] for name in ("aime24.jsonl", "amc23.jsonl", "math500.jsonl") for r in _rows(name)]
    assert len(answers) > 500 and not [a for a in answers if explosive(a)]
    assert grade("2^{10}", "1024")
