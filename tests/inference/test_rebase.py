from components.data.problems import addition_steps
from components.inference.rebase import ProgrammaticProcessReward, RebaseSpec, allocate, build_reward, rebase

Q = "What is 958 + 67?"


def test_allocation_follows_reward_softmax_and_spends_the_budget():
    assert sum(allocate([0.1, 0.9, 0.5], 7, 0.2)) == 7
    hi_first = allocate([0.0, 1.0], 10, 0.2)
    assert hi_first[1] > hi_first[0]
    assert allocate([0.3, 0.3], 4, 1.0) == [2, 2]
    assert allocate([0.5], 0, 1.0) == [0]


def test_programmatic_reward_checks_each_line():
    prm = build_reward("programmatic")
    assert isinstance(prm, ProgrammaticProcessReward)
    right = addition_steps(958, 67)
    assert prm.score(Q, right) == 1.0
    wrong = [right[0], right[1].replace("=15", "=16")]
    assert prm.score(Q, wrong) == 0.5
    corrected = wrong + [f"Wait, let me re-check: {right[1]}"]
    assert prm.score(Q, corrected) == 1.0


def test_rebase_returns_one_voted_result_per_question(tiny_engine):
    spec = RebaseSpec(width=2, max_step_tokens=8, max_thinking_tokens=16, max_answer_tokens=4)
    out = rebase(tiny_engine, [Q, "What is 12 + 30?"], spec, build_reward("programmatic"))
    assert len(out) == 2
    for r in out:
        assert r.tries == 2 and r.thinking_tokens > 0
