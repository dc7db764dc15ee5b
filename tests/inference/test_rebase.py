from components.inference.rebase import RebaseSpec, allocate, build_reward, rebase, register_reward

Q = "What is 958 + 67?"


class ShortLines:
    """A process reward that prefers short lines (any callable reward fits REBASE)."""

    name = "test-short-lines"

    def score(self, question, steps):
        return 1.0 / (1 + sum(len(s) for s in steps))


def test_allocation_follows_reward_softmax_and_spends_the_budget():
    assert sum(allocate([0.1, 0.9, 0.5], 7, 0.2)) == 7
    hi_first = allocate([0.0, 1.0], 10, 0.2)
    assert hi_first[1] > hi_first[0]
    assert allocate([0.3, 0.3], 4, 1.0) == [2, 2]
    assert allocate([0.5], 0, 1.0) == [0]


def test_a_registered_reward_is_built_by_its_name():
    reward = ShortLines()
    register_reward(reward)
    assert build_reward("test-short-lines") is reward


def test_rebase_returns_one_voted_result_per_question(tiny_engine):
    spec = RebaseSpec(width=2, max_step_tokens=8, max_thinking_tokens=16, max_answer_tokens=4)
    out = rebase(tiny_engine, [Q, "What is 12 + 30?"], spec, ShortLines())
    assert len(out) == 2
    for r in out:
        assert r.tries == 2 and r.thinking_tokens > 0
