"""The controllers that need no probes: scheduled waits (slow thinking up to alpha x budget, then the end forced)
and shortest majority vote (majority voting's samples, the vote weighted toward shorter thinking)."""
import pytest

from components.inference.methods.base import Forcing
from components.inference.methods.registry import build
from components.inference.methods.shortest_majority import shortest_majority
from tests.support.engine_checks import QUESTIONS as QS
from tests.support.engine_checks import Biased


def test_shortest_majority_scores_votes_over_mean_length():
    # two groups of two votes: the shorter group wins, represented by its shortest sample
    assert shortest_majority(["5", "7", "5", "7"], [100, 10, 100, 20]) == 1
    # one short answer outscores two long ones (1/10 > 2/50); equal scores go to the group seen first
    assert shortest_majority(["5", "5", "7"], [50, 50, 10]) == 2
    assert shortest_majority(["5", "7"], [10, 10]) == 0
    assert shortest_majority(["", ""], [3, 4]) == -1  # no answer votes
    assert shortest_majority(["1/2", "0.5", "3"], [40, 40, 30]) == 0  # equivalent forms vote together (2/40 > 1/30)


def test_shortest_majority_votes_over_majority_votings_samples(tiny_engine):
    forcing = Forcing(max_answer_tokens=4)
    voting = build("majority_voting", forcing, {"samples": [3]}, budgets=[8])
    shortest = build("shortest_majority", forcing, {"samples": [3]}, budgets=[8])
    samples = voting.samples(tiny_engine, QS[:4], 3)
    assert [r.thinking_tokens for r in shortest.run(tiny_engine, QS[:4], 3)] == \
        [sum(s[q].thinking_tokens for s in samples) for q in range(4)]  # the same samples, compute summed
    for q, r in enumerate(shortest.run(tiny_engine, QS[:4], 3)):
        assert r.tries == 3 and r.thinking in {s[q].thinking for s in samples}


@pytest.mark.parametrize("alpha,budget", [(1.0, 8), (0.5, 16), (1.5, 8)])
def test_scheduled_waits_think_slowly_up_to_the_moment_then_end(tiny_engine, alpha, budget):
    """A model that always wants to stop is answered with a wait at every attempt before the moment, and its
    thinking ends exactly there; one that never stops is cut at the moment."""
    method = build("scheduled_waits", Forcing(max_answer_tokens=4), {"alpha": alpha}, budgets=[budget])
    moment = int(alpha * budget)
    for r in method.run(Biased(tiny_engine, 100.0), QS, budget):
        assert r.thinking_tokens == moment and r.hit_budget and r.waits_used >= 1
        assert r.thinking.count("Wait") == r.waits_used
    for r in method.run(Biased(tiny_engine, -100.0), QS, budget):
        assert (r.thinking_tokens, r.waits_used, r.hit_budget) == (moment, 0, True)


def test_scheduled_waits_stop_inserting_after_max_waits(tiny_engine):
    method = build("scheduled_waits", Forcing(max_answer_tokens=4), {"alpha": 2.0, "max_waits": 1}, budgets=[16])
    for r in method.run(Biased(tiny_engine, 100.0), QS, 16):
        assert r.waits_used == 1 and r.thinking_tokens < 32 and not r.hit_budget  # the second stop ends it


def test_rejection_sampling_counts_every_discarded_try_as_compute(tiny_engine):
    """A model that never ends its thinking thinks to the engine's cap at every try, so no try fits a budget of 6:
    the kept (last) try's thinking is thinking_tokens, the two before it are discarded_tokens, all three compute."""
    forcing, engine = Forcing(max_answer_tokens=4), Biased(tiny_engine, -100.0)
    method = build("rejection_sampling", forcing, {"max_tries": 3}, budgets=[6])
    prompts = method.prompts(tiny_engine, QS[:3])
    tries = [engine.generate_forced(prompts, [forcing.spec(None)] * 3, forcing.sampled(k)) for k in range(3)]
    for q, r in enumerate(method.run(engine, QS[:3], 6)):
        assert r.tries == 3 and r.thinking_tokens == tries[2][q].thinking_tokens > 6
        assert r.discarded_tokens == tries[0][q].thinking_tokens + tries[1][q].thinking_tokens
        assert r.compute_tokens == sum(t[q].thinking_tokens for t in tries)
