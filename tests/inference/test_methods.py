"""Every test-time method, built by name from its params section, on the tiny model; and majority voting's
answer grouping."""
import pytest

from components.config import EvaluateConfig
from components.evaluation import evaluate_sweep
from components.evaluation.sweep import method
from components.inference.methods.registry import METHODS, build, section_problems
from components.inference.methods.voting import vote
from components.records import Question

QS = ["What is 12 + 34?", "What is the digit sum of 987?", "Solve for x: x - 5 = 7. What is x?"]


def cfg(**kw):
    methods = {"majority_voting": {"samples": [1, 3]}, "shortest_majority": {"samples": [1, 3]},
               "wait_extension": {"waits": [0, 2]}, "rejection_sampling": {"max_tries": 3},
               "step_conditional": {"step_tokens": 4}, "class_conditional": {"threshold": 4},
               "rebase": {"widths": [1, 2], "step_tokens": 6}}
    base = dict(budgets=[4, 8], max_answer_tokens=4, methods=methods)
    return EvaluateConfig(**{**base, **kw})


ORIGINAL = ["budget_forcing", "wait_extension", "token_conditional", "step_conditional", "class_conditional",
            "rejection_sampling", "majority_voting", "rebase"]


@pytest.mark.parametrize("name", ORIGINAL)
def test_every_method_runs_by_name(tiny_engine, name):
    c = cfg()
    m = method(c, name)
    value = m.values()[-1]
    results = m.run(tiny_engine, QS, value)
    assert len(results) == len(QS)
    cap = tiny_engine.unlimited  # the engine's thinking cap: what a prompt-conditioned method can reach at most
    for r in results:
        assert r.tries >= 1 and r.answer_tokens <= c.max_answer_tokens + 8  # prefix + answer, never unbounded
        if name in ("budget_forcing", "rejection_sampling"):
            assert r.thinking_tokens <= value or (name == "rejection_sampling" and r.tries == 3)
        elif name == "rebase":  # every expanded node counts: at most one step per node per round, `width` a round
            assert 0 < r.thinking_tokens <= value * (cap + 6) * cap
        else:  # each sample thinks at most up to the cap; voting reports the samples' sum
            assert r.thinking_tokens <= cap * r.tries
    if name == "budget_forcing":  # an untrained model never ends thinking by itself: the budget ends it
        assert all(r.thinking_tokens == value and r.hit_budget for r in results)
    if name == "majority_voting":
        assert all(r.tries == value for r in results)
    if name == "wait_extension":
        assert all(r.waits_used <= value for r in results)


def test_rejection_sampling_retries_until_the_budget_fits(tiny_engine):
    results = method(cfg(), "rejection_sampling").run(tiny_engine, QS, 6)
    for r in results:
        assert r.thinking_tokens <= 6 or r.tries == 3


def test_an_unknown_method_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'beam_search' is not a test-time method; choose one of"):
        EvaluateConfig(method="beam_search")
    with pytest.raises(ValueError, match=r"methods: \['beam_search'\] are not test-time methods"):
        EvaluateConfig(methods={"beam_search": {}})


def test_a_methods_section_is_validated_by_its_settings_naming_the_key():
    bad = EvaluateConfig(methods={"majority_voting": {"samples": [0, 2]}, "rebase": {"width": [2]}})
    problems = section_problems(bad)  # checked by `s1flow validate`, the run's preflight and the evaluate stage
    assert problems[0].startswith("evaluate.methods.majority_voting.samples: Value error, list sample counts >= 1")
    assert problems[1].startswith("evaluate.methods.rebase.width: Extra inputs are not permitted")  # a typo
    with pytest.raises(ValueError, match=r"evaluate.methods.majority_voting.samples"):
        method(bad, "majority_voting")


def test_a_method_is_built_from_its_own_section_and_the_shared_settings():
    from components.inference.methods.base import Forcing
    m = build("majority_voting", Forcing(sample_temperature=0.7, seed=3), {"samples": [4, 1]}, budgets=[8])
    assert m.values() == [1, 4] and m.kind.value == "parallel" and m.forcing.sampled(2).seed == 2003
    assert build("budget_forcing", Forcing(), None, budgets=[16, 8]).values() == [8, 16]
    assert set(ORIGINAL) <= set(METHODS)


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
