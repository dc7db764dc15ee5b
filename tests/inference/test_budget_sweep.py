"""A sweep's shared work gives what the point-by-point runs give: budget forcing's budgets from one capped
thinking run (``budget_sweep``), majority voting's N from one set of samples, the extrapolation ablations'
runs in one engine call. (That budget_sweep equals one run per budget, and token-id prompts generate as
their text does, are engine checks: tests/support/engine_checks.py, run on every engine.)"""
from components.config import EvaluateConfig
from components.evaluation.sweep import method
from components.inference.budget_forcing import BudgetSpec
from components.inference.budget_sweep import budget_sweep, shares_thinking
from components.inference.engine import Sampling
from tests.support.engine_checks import QUESTIONS as QS
from tests.support.engine_checks import STOP_PULL, SWEEP_BUDGETS, prompts, stop_bias


def fields(r):
    return (r.thinking, r.answer, r.thinking_tokens, r.answer_tokens, r.waits_used, r.hit_budget, r.token_ids)


def test_the_sweep_check_cuts_some_rows_and_not_others(tiny_engine):
    """The engine check of budget_sweep (run on every engine) exercises both kinds of row."""
    spec = BudgetSpec(final_answer_prefix="Answer:", max_answer_tokens=6)
    shared = budget_sweep(tiny_engine, prompts(tiny_engine), SWEEP_BUDGETS, spec, stop_bias(tiny_engine, STOP_PULL))
    ended = [r.thinking_tokens for r in shared[None] if not r.hit_budget]
    assert ended and min(ended) < 50 and any(r.hit_budget for r in shared[None])
    assert all(r.thinking_tokens == 40 and r.answer.startswith("Answer:") for r in shared[40] if r.hit_budget)
    assert [fields(r) for r in shared[50] if r.thinking_tokens < 50] == \
        [fields(r) for r in shared[None] if r.thinking_tokens < 50]  # ended before the cut: the capped run's


def test_only_greedy_forcing_that_only_cuts_shares_thinking():
    greedy, spec = Sampling(), BudgetSpec()
    assert shares_thinking(spec, greedy, [8, None], cap=64)
    assert not shares_thinking(spec, Sampling(temperature=0.7), [8], cap=64)  # each run samples anew
    assert not shares_thinking(BudgetSpec(num_waits=1), greedy, [8], cap=64)  # a wait changes what follows
    assert not shares_thinking(BudgetSpec(min_thinking_tokens=4), greedy, [8], cap=64)
    assert not shares_thinking(spec, greedy, [128], cap=64)  # thinks past the capped run


def test_voting_sweep_votes_over_the_first_n_of_one_set_of_samples(tiny_engine):
    voting = method(EvaluateConfig(max_answer_tokens=4), "majority_voting")
    swept = voting.run_sweep(tiny_engine, QS[:3], [1, 2, 3])
    for n in (1, 2, 3):
        alone = voting.combine(voting.samples(tiny_engine, QS[:3], n))
        assert [fields(r) + (r.tries,) for r in swept[n]] == [fields(r) + (r.tries,) for r in alone]


def test_ablation_runs_in_one_call_equal_their_separate_runs(tiny_engine):
    cfg = EvaluateConfig(max_answer_tokens=4)
    runs = [(("Wait",), 0), (("Hmm",), 2), (("",), 1), (("Wait", "Hmm"), 3)]
    together = method(cfg, "wait_extension").run_many(tiny_engine, QS, runs)
    for (strings, k), res in zip(runs, together):
        alone = method(cfg.model_copy(update={"wait_strings": list(strings)}), "wait_extension").run(tiny_engine, QS, k)
        assert [fields(r) for r in res] == [fields(r) for r in alone], (strings, k)
