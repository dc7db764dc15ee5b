"""REBASE's programmatic reward: the procedural world's verifier, registered by name."""
from components.data.problems import addition_steps
from components.evaluation.rewards import ProgrammaticProcessReward
from components.inference.rebase import build_reward

Q = "What is 958 + 67?"


def test_programmatic_reward_checks_each_line():
    prm = build_reward("programmatic")
    assert isinstance(prm, ProgrammaticProcessReward)
    right = addition_steps(958, 67)
    assert prm.score(Q, right) == 1.0
    wrong = [right[0], right[1].replace("=15", "=16")]
    assert prm.score(Q, wrong) == 0.5
    corrected = wrong + [f"Wait, let me re-check: {right[1]}"]
    assert prm.score(Q, corrected) == 1.0


def test_a_question_outside_the_world_scores_neutral():
    assert ProgrammaticProcessReward().score("Why is the sky blue?", ["Rayleigh scattering."]) == 0.5
    assert ProgrammaticProcessReward().score(Q, []) == 0.5
