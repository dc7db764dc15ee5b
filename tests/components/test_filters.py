"""Each filter on crafted rows, and the selection strategies."""
from collections import Counter
from pathlib import Path

import pytest

from components.config import QualityConfig
from components.curation.decontamination import NgramIndex
from components.curation.quality import quality_reason
from components.curation.selection import STRATEGIES, select
from components.inference.attempts import student_attempts
from components.records import Example, Question, Trace


def ex(question="What is 12 + 30?", thinking="2+0=2, carry 0, so far 2", answer="Answer: 42", ok=True,
       msc="97", tokens=0, qid="q"):
    return Example(question=Question(id=qid, source="t", question=question, answer="42", msc=msc),
                   trace=Trace(question_id=qid, teacher="t", thinking=thinking, answer=answer, ok=ok),
                   trace_tokens=tokens)


@pytest.mark.parametrize("row,reason", [
    (ex(), None),
    (ex(ok=False), "api_error"),
    (ex(thinking=""), "empty_trace"),
    (ex(answer=""), "truncated_trace"),
    (ex(question="As shown in the figure above, what is 12 + 30?"), "missing_figure"),
    (ex(question="Using the diagram below, find x. [asy] draw((0,0)--(1,1)); [/asy]"), "missing_figure"),
    (ex(question="+---+---+\n| 1 | 2 |\n+---+---+\nWhat is 12 + 30?"), "ascii_art"),
    (ex(question="(1) What is 1 + 2? (3) What is 3 + 4?"), "inconsistent_numbering"),
    (ex(question="(1) What is 1 + 2? (2) What is 3 + 4?"), None),
])
def test_quality_reasons(row, reason):
    assert quality_reason(row, QualityConfig()) == reason


def test_decontamination_8gram_and_exact():
    evals = ["Every morning Aya goes for a 9-kilometer-long walk and stops at a coffee shop afterwards.",
             "What is 1 + 1?"]
    index = NgramIndex.build(evals, n=8)
    # shares the 8-gram "aya goes for a 9 kilometer long walk", with different casing/punctuation
    assert index.contaminated("Each day, AYA goes for a 9 kilometer long walk; how far is it?")
    assert not index.contaminated("Each day Bob goes for a 9 kilometer long walk; how far is it?")
    assert index.contaminated("what is 1+1 ?")  # short text: exact match after normalisation
    assert not index.contaminated("What is 1 + 2?")


def test_decontamination_against_real_eval_sets(tmp_path):
    import json
    path = Path(__file__).resolve().parents[1] / "fixtures/eval/aime24.jsonl"
    rows = [json.loads(l) for l in path.open()]
    index = NgramIndex.build([r["problem"] for r in rows], n=8)
    leaked = "Rephrased: " + " ".join(rows[0]["problem"].split()[5:20])
    assert index.contaminated(leaked)
    assert not index.contaminated("What is the digit sum of 123456?")


class ScriptedStudent:
    """A student engine whose answers are scripted: right on even ids, wrong on odd."""

    batch_size = 4
    tokenizer = None

    def __init__(self):
        self.asked = []

    def generate(self, prompts, sampling):
        from components.inference.engine import Completion
        out = []
        for p in prompts:
            i = len(self.asked)
            self.asked.append(p)
            text = "Answer: 42" if i % 2 == 0 else "Answer: 41"
            out.append(Completion([], text, 1, 3, "stop"))
        return out


def test_difficulty_drops_what_the_student_solves(monkeypatch):
    import components.inference.attempts as difficulty
    monkeypatch.setattr(difficulty, "prompt_text", lambda tok, q: q)
    rows = [ex(qid=f"q{i}") for i in range(10)]
    solved = student_attempts(ScriptedStudent(), rows, max_new_tokens=8)
    assert solved == [i % 2 == 0 for i in range(10)]


def test_a_student_cut_off_before_its_answer_has_not_solved_it(monkeypatch):
    import components.inference.attempts as difficulty
    from components.inference.engine import Completion

    class CutOff(ScriptedStudent):
        def generate(self, prompts, sampling):  # restates the operands, then runs out of tokens (or not)
            return [Completion([], "By the sum rule, add the two counts.\n40 + 2", 1, sampling.max_new_tokens,
                               "length" if i % 2 else "stop") for i, _ in enumerate(prompts)]
    monkeypatch.setattr(difficulty, "prompt_text", lambda tok, q: q)
    assert student_attempts(CutOff(), [ex(qid=f"q{i}") for i in range(4)], max_new_tokens=8) == [True, False] * 2


def _pool(n_per_domain=(40, 10, 5)):
    rows = []
    for msc, n in zip(("05", "11", "97"), n_per_domain):
        rows += [ex(msc=msc, tokens=10 * i + 1, qid=f"{msc}-{i:03d}") for i in range(n)]
    return rows


def test_diversity_sampling_is_uniform_over_domains_and_favours_long_traces():
    chosen = select(_pool((200, 200, 200)), "diversity", 150, seed=0)
    per = Counter(e.question.msc for e in chosen)
    assert all(35 <= n <= 65 for n in per.values())
    # 2^-rank: with plenty left, picks are almost always among the longest in each domain
    longest = {f"{m}-{i:03d}" for m in ("05", "11", "97") for i in range(199 - 60, 200)}
    assert sum(e.question.id in longest for e in chosen) >= 145


def test_small_domains_are_exhausted_then_others_fill():
    chosen = select(_pool(), "diversity", 50, seed=1)
    per = Counter(e.question.msc for e in chosen)
    assert per["97"] == 5 and per["11"] == 10 and per["05"] == 35
    assert len({e.question.id for e in chosen}) == 50


def test_strategies_are_seeded_and_order_independent():
    pool = _pool()
    for name in STRATEGIES:
        a = [e.question.id for e in select(pool, name, 20, seed=3)]
        b = [e.question.id for e in select(pool[::-1], name, 20, seed=3)]
        assert a == b, name
    assert [e.trace_tokens for e in select(pool, "longest", 3, 0)] == [391, 381, 371]
    assert len(select(pool, "all", 3, 0)) == len(pool)
    with pytest.raises(ValueError, match="selection.strategy"):
        select(pool, "best", 3, 0)
