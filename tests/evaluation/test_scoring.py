import pytest

from components.evaluation.scoring import pass_at_k, score, score_by_budget


def rec(q, seed, correct, budget=8, tokens=5):
    return {"question_id": q, "seed": seed, "correct": correct, "budget": budget, "thinking_tokens": tokens}


def test_avg_and_pass_at_k_hand_computed():
    rs = [rec("a", 0, True), rec("a", 1, False), rec("b", 0, False), rec("b", 1, False),
          rec("c", 0, True), rec("c", 1, True)]
    s = score(rs)
    assert s["k"] == 2 and s["samples_per_question"] == 2
    assert s["avg@2"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["pass@2"] == pytest.approx(2 / 3)
    # per-seed accuracy: seed 0 -> 2/3, seed 1 -> 1/3; mean 0.5, SE = std/sqrt(2)
    assert s["accuracy_mean"] == pytest.approx(0.5)
    assert s["accuracy_se"] == pytest.approx(((2 * (1 / 6) ** 2) / 1) ** 0.5 / 2 ** 0.5)


def test_greedy_single_seed_has_zero_se():
    s = score([rec("a", 0, True), rec("b", 0, False)])
    assert s["accuracy_se"] == 0.0 and s["avg@1"] == s["pass@1"] == 0.5


def test_unbiased_pass_at_k():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_by_budget_orders_none_last():
    rs = [rec("a", 0, True, budget=None), rec("a", 0, False, budget=16), rec("a", 0, True, budget=4)]
    assert list(score_by_budget(rs)) == ["4", "16", "None"]
