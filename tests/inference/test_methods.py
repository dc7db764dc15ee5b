"""Every test-time method, by name, on the tiny model; and majority voting's answer grouping."""
import pytest

from components.config import EvaluateConfig
from components.evaluation import evaluate_sweep
from components.inference.methods import METHODS, run_method, sweep_values, vote
from components.records import Question

QS = ["What is 12 + 34?", "What is the digit sum of 987?", "Solve for x: x - 5 = 7. What is x?"]


def cfg(**kw):
    base = dict(budgets=[4, 8], max_answer_tokens=4, voting_samples=[1, 3], wait_counts=[0, 2],
                rejection_max_tries=3, step_tokens=4, class_threshold=4, rebase_widths=[1, 2], rebase_step_tokens=6)
    return EvaluateConfig(**{**base, **kw})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_by_name(tiny_engine, name):
    c = cfg()
    value = sweep_values(name, c)[-1]
    results = run_method(name, tiny_engine, QS, value, c)
    assert len(results) == len(QS)
    cap = tiny_engine.unlimited  # the engine's thinking cap: what a prompt-conditioned method can reach at most
    for r in results:
        assert r.tries >= 1 and r.answer_tokens <= c.max_answer_tokens + 8  # prefix + answer, never unbounded
        if name in ("budget_forcing", "rejection_sampling"):
            assert r.thinking_tokens <= value or (name == "rejection_sampling" and r.tries == c.rejection_max_tries)
        elif name == "rebase":  # every expanded node counts: at most one step per node per round, `width` a round
            assert 0 < r.thinking_tokens <= value * (cap + c.rebase_step_tokens) * cap
        else:  # each sample thinks at most up to the cap; voting reports the samples' sum
            assert r.thinking_tokens <= cap * r.tries
    if name == "budget_forcing":  # an untrained model never ends thinking by itself: the budget ends it
        assert all(r.thinking_tokens == value and r.hit_budget for r in results)
    if name == "majority_voting":
        assert all(r.tries == value for r in results)
    if name == "wait_extension":
        assert all(r.waits_used <= value for r in results)


def test_rejection_sampling_retries_until_the_budget_fits(tiny_engine):
    results = run_method("rejection_sampling", tiny_engine, QS, 6, cfg())
    for r in results:
        assert r.thinking_tokens <= 6 or r.tries == 3


def test_unknown_method_is_named(tiny_engine):
    with pytest.raises(ValueError, match="evaluate.method"):
        run_method("beam_search", tiny_engine, QS, 4, cfg())


def test_vote_groups_equivalent_answers():
    assert vote(["1/2", "3", "0.5", r"\frac{1}{2}", "3"]) == "1/2"
    assert vote(["", "", "7"]) == "7"
    assert vote([]) == ""


def test_sweep_reports_every_compared_method(tiny_engine):
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    report, gens = evaluate_sweep(tiny_engine, qs, cfg(compare_methods=["token_conditional", "majority_voting",
                                                                         "wait_extension"]))
    assert set(report["methods"]) == {"budget_forcing", "token_conditional", "majority_voting", "wait_extension"}
    assert [p["budget"] for p in report["methods"]["majority_voting"]["points"]] == [1, 3]
    assert report["control"] == 1.0  # budget forcing always stays within its budget
    assert [p["budget"] for p in report["methods"]["wait_extension"]["points"]] == [0, 2]
    assert len(gens) == len(qs) * (2 + 2 + 2 + 2 + 1)
