"""Intervals, pass@k and paired tests of components.evaluation.statistics against known values."""
from itertools import combinations
from math import comb

import numpy as np
import pytest

from components.evaluation.statistics import (
    QuestionMismatch,
    accuracy,
    accuracy_interval,
    bootstrap_interval,
    clopper_pearson,
    mcnemar_exact,
    paired_comparison,
    pass_at_k_score,
    per_question,
    sign_flip_test,
)

# Clopper-Pearson 95% bounds: Beta(x, n-x+1) 2.5% and Beta(x+1, n-x) 97.5% quantiles (scipy.stats.beta.ppf)
KNOWN_CP = {(0, 10): (0.0, 0.30849710781876),
            (5, 10): (0.18708602844740, 0.81291397155260),
            (10, 10): (0.69150289218124, 1.0),
            (3, 30): (0.02111713702972, 0.26528845047421)}


@pytest.mark.parametrize("x,n", list(KNOWN_CP))
def test_clopper_pearson_matches_the_beta_quantiles(x, n):
    iv = clopper_pearson(x, n)
    assert (iv.low, iv.high) == pytest.approx(KNOWN_CP[(x, n)], abs=1e-9)
    assert iv.method == "clopper-pearson"


def test_clopper_pearson_agrees_with_scipy_where_installed():
    beta = pytest.importorskip("scipy.stats").beta
    for x, n in [(1, 7), (17, 40), (160, 200), (499, 500), (250, 1000)]:
        iv = clopper_pearson(x, n)
        assert iv.low == pytest.approx(beta.ppf(0.025, x, n - x + 1), abs=1e-9)
        assert iv.high == pytest.approx(beta.ppf(0.975, x + 1, n - x), abs=1e-9)


def test_clopper_pearson_refuses_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(11, 10)


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of k-subsets of the n samples holding at least one correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample():
    table = {"a": (0, 6), "b": (1, 6), "c": (3, 6), "d": (6, 6)}
    for k in (1, 2, 3, 5):
        want = sum(_brute_pass_at_k(n, c, k) for c, n in table.values()) / len(table)
        assert pass_at_k_score(table, k) == pytest.approx(want, abs=1e-12)
    assert pass_at_k_score(table, 1) == pytest.approx(accuracy(table))  # pass@1 is avg@k
    with pytest.raises(ValueError, match="at least 7 samples"):
        pass_at_k_score(table, 7)


def test_per_question_table_counts_samples_and_skips_failed_requests():
    records = [{"task": "t", "method": "budget_forcing", "budget": 8, "question_id": "q1", "seed": s, "correct": c}
               for s, c in enumerate([True, False, True])]
    records += [{"task": "t", "method": "budget_forcing", "budget": 8, "question_id": "q2", "seed": 0,
                 "correct": False},
                {"task": "t", "method": "budget_forcing", "budget": 8, "question_id": "q2", "seed": 1, "failed": True},
                {"task": "t", "method": "budget_forcing", "budget": None, "question_id": "q2", "seed": 0,
                 "correct": True}]
    assert per_question(records, task="t", budget=8) == {"q1": (2, 3), "q2": (0, 1)}
    assert per_question(records, budget=None) == {"q2": (1, 1)}
    assert accuracy({"q1": (2, 3), "q2": (0, 1)}) == pytest.approx(1 / 3)  # mean of per-question means


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    # 1 vs 6 discordant: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * (1 + 7) / 128
    assert mcnemar_exact(1, 6) == pytest.approx(16 / 128)
    assert mcnemar_exact(6, 1) == mcnemar_exact(1, 6)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(2, 9) == pytest.approx(2 * sum(comb(11, i) for i in range(3)) / 2 ** 11)


def test_sign_flip_is_exact_on_small_sets_and_seeded_on_large():
    # 4 questions, all +1: only the all-plus and all-minus patterns are as extreme: 2/16
    assert sign_flip_test([1, 1, 1, 1]) == pytest.approx(2 / 16)
    assert sign_flip_test([0, 0, 0]) == 1.0
    big = [0.5] * 12 + [-0.25] * 8 + [0.0] * 20
    assert sign_flip_test(big) == sign_flip_test(big)  # deterministic
    assert 0 < sign_flip_test(big) < 0.2


def test_bootstrap_is_deterministic_and_covers_the_mean():
    rng = np.random.default_rng(1)
    values = rng.random(30)
    a, b = bootstrap_interval(values), bootstrap_interval(values)
    assert a == b and a.method == "bootstrap"
    assert a.low < values.mean() < a.high
    assert bootstrap_interval(values, seed=1) != a  # the seed is what fixes it
    # covering: over repeated draws of 40 questions with true mean 0.6 the interval holds it most of the time
    intervals = [bootstrap_interval(np.random.default_rng(s).binomial(4, 0.6, 40) / 4, resamples=2000)
                 for s in range(100)]
    assert sum(iv.low <= 0.6 <= iv.high for iv in intervals) >= 88


def test_accuracy_interval_fits_the_shape_of_the_result():
    greedy = {f"q{i}": (int(i < 5), 1) for i in range(10)}
    assert accuracy_interval(greedy) == clopper_pearson(5, 10)
    sampled = {f"q{i}": (i % 5, 4) for i in range(10)}
    assert accuracy_interval(sampled).method == "bootstrap"


def test_paired_greedy_comparison_uses_exact_mcnemar():
    a = {f"q{i}": (int(i < 4), 1) for i in range(20)}        # right on q0..q3
    b = {f"q{i}": (int(1 <= i < 11), 1) for i in range(20)}  # right on q1..q10
    r = paired_comparison(a, b)
    assert (r.questions, r.accuracy_a, r.accuracy_b) == (20, 0.2, 0.5)
    assert r.difference == pytest.approx(0.3) and (r.a_only, r.b_only) == (1, 7)
    assert r.test == "exact McNemar" and r.p_value == pytest.approx(2 * (1 + 8) / 256)
    assert r.low < 0.3 < r.high and r == paired_comparison(a, b)


def test_paired_avg_at_k_comparison_uses_sign_flips():
    a = {f"q{i}": (1, 4) for i in range(8)}
    b = {f"q{i}": (3, 4) for i in range(8)}
    r = paired_comparison(a, b)
    assert r.test == "sign-flip permutation" and r.difference == pytest.approx(0.5)
    assert r.p_value == pytest.approx(2 / 256) and r.low == r.high == pytest.approx(0.5)


def test_different_questions_are_refused_by_name():
    a = {"q1": (1, 1), "q2": (0, 1)}
    with pytest.raises(QuestionMismatch, match=r"1 only in A \(e.g. \['q2'\]\), 1 only in B \(e.g. \['q3'\]\)"):
        paired_comparison(a, {"q1": (1, 1), "q3": (1, 1)})
    assert paired_comparison(a, {"q1": (1, 1), "q3": (1, 1)}, allow_subset=True).questions == 1
    with pytest.raises(QuestionMismatch, match="share no question ids"):
        paired_comparison(a, {"x": (1, 1)}, allow_subset=True)
