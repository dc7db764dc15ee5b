"""Uncertainty of an accuracy and of a difference between two, from the per-question outcomes behind them.

A result is a per-question table, question id -> (correct samples, samples): one sample per question for the
greedy protocol, k for avg@k. Its accuracy is the mean over questions of each question's share correct.

* One sample per question: the exact Clopper-Pearson 95% interval (:func:`clopper_pearson`). Reasoning sets are
  small (AIME: 30 questions), where the normal approximation's interval is too narrow and can leave [0, 1]
  (Bowyer et al. 2025, arXiv 2503.01747, recommend exact or Bayesian intervals below a few hundred questions).
  Clopper-Pearson is chosen over Wilson because its coverage is at least 95% for every n and true accuracy
  (Wilson's is 95% only on average and dips below it for some), so a cited interval never overstates precision,
  and it is the interval that matches the exact McNemar test used for paired greedy results.
* k samples per question (avg@k): a percentile bootstrap that resamples questions, each carrying the mean of
  its k samples (:func:`bootstrap_interval`): the questions are the unit that was drawn, the samples of one
  question are not independent of each other. Where every question has the same mean (all right, or all
  wrong) there is nothing to resample and the interval has zero width: read it with the number of questions.
* pass@k for k > 1: the unbiased estimator of Chen et al. (2021), averaged over questions (:func:`pass_at_k_score`).
* Two results on the same questions (:func:`paired_comparison`): the per-question difference, its paired
  bootstrap 95% interval, and a paired test: exact McNemar for two one-sample results, a sign-flip permutation
  test for avg@k (exact up to 16 questions, else 10,000 seeded flips).

Every random draw uses a fixed seed: the same inputs give the same interval and p-value.

    table = per_question(records, task="heldout", method="budget_forcing", budget=240)
    interval = accuracy_interval(table)
    result = paired_comparison(table_a, table_b)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from components.evaluation.scoring import pass_at_k

QuestionTable = dict[str, tuple[int, int]]  # question id -> (correct samples, samples)

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
EXACT_SIGN_FLIP_MAX = 16  # questions up to which the sign-flip test enumerates every flip (2**16 patterns)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "clopper-pearson" | "bootstrap"


@dataclass(frozen=True)
class Paired:
    """Two results on the same questions: each side's accuracy, the difference ``b - a`` with its interval, and
    the paired test's two-sided p-value."""

    questions: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    low: float
    high: float
    p_value: float
    test: str  # "exact McNemar" | "sign-flip permutation"
    a_only: int  # questions A answers better than B (for one sample each: A right, B wrong)
    b_only: int


def _get(r: Any, key: str, default: Any = None) -> Any:
    return r.get(key, default) if isinstance(r, dict) else getattr(r, key, default)


_ANY = object()


def per_question(records: Iterable[Any], task: Any = _ANY, method: Any = _ANY, budget: Any = _ANY) -> QuestionTable:
    """The per-question table of the records matching ``task``, ``method`` and ``budget`` (any, when not given;
    ``budget=None`` is the no-budget run). Failed requests (``failed: true``) are left out, never scored wrong."""
    out: dict[str, list[int]] = {}
    for r in records:
        if _get(r, "failed", False):
            continue
        if (task is not _ANY and _get(r, "task") != task) or (method is not _ANY and _get(r, "method") != method) \
                or (budget is not _ANY and _get(r, "budget") != budget):
            continue
        c = out.setdefault(str(_get(r, "question_id")), [0, 0])
        c[0] += bool(_get(r, "correct"))
        c[1] += 1
    return {q: (c, n) for q, (c, n) in out.items()}


def _check(table: Mapping[str, tuple[int, int]]) -> None:
    if not table:
        raise ValueError("no questions to score (an empty per-question table)")
    bad = [q for q, (c, n) in table.items() if n < 1 or not 0 <= c <= n]
    if bad:
        raise ValueError(f"per-question table: questions {bad[:5]} need 0 <= correct <= samples and samples >= 1")


def question_means(table: Mapping[str, tuple[int, int]]) -> np.ndarray:
    """Each question's share of correct samples, in sorted question-id order."""
    _check(table)
    return np.array([table[q][0] / table[q][1] for q in sorted(table)], dtype=float)


def accuracy(table: Mapping[str, tuple[int, int]]) -> float:
    """avg@k: the mean over questions of each question's share correct (plain accuracy with one sample each)."""
    return float(question_means(table).mean())


def samples_per_question(table: Mapping[str, tuple[int, int]]) -> int:
    """k: the fewest samples any question has."""
    _check(table)
    return min(n for _, n in table.values())


def single_sample(table: Mapping[str, tuple[int, int]]) -> bool:
    _check(table)
    return all(n == 1 for _, n in table.values())


def _log_binom_pmf(n: int, i: int, p: float) -> float:
    log_comb = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
    return log_comb + (i * math.log(p) if i else 0.0) + ((n - i) * math.log1p(-p) if n - i else 0.0)


def _binom_tail(n: int, lo: int, hi: int, p: float) -> float:
    """P(lo <= X <= hi) for X ~ Binomial(n, p), 0 < p < 1, summed in log space (no overflow at large n)."""
    logs = [_log_binom_pmf(n, i, p) for i in range(lo, hi + 1)]
    top = max(logs)
    return math.exp(top) * sum(math.exp(v - top) for v in logs)


def _solve(f, target: float) -> float:
    """The p in (0, 1) where the increasing ``f`` reaches ``target`` (bisection to 1e-12)."""
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """The exact binomial interval for ``successes`` out of ``n``: the lower bound is the p at which seeing
    ``successes`` or more has probability alpha/2, the upper the p at which seeing ``successes`` or fewer has;
    0 and 1 at the ends (0/n and n/n)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"clopper_pearson: need 0 <= successes ({successes}) <= n ({n}) and n >= 1")
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else _solve(lambda p: _binom_tail(n, successes, n, p), alpha / 2)
    high = 1.0 if successes == n else _solve(lambda p: 1 - _binom_tail(n, 0, successes, p), 1 - alpha / 2)
    return Interval(low, high, "clopper-pearson")


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (one per question), resampling questions."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_interval: no values")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    return Interval(*_percentiles(means, confidence), "bootstrap")


def accuracy_interval(table: Mapping[str, tuple[int, int]], confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The accuracy's interval suited to its shape: Clopper-Pearson with one sample per question, the question
    bootstrap of per-question means with more."""
    if single_sample(table):
        return clopper_pearson(sum(c for c, _ in table.values()), len(table), confidence)
    return bootstrap_interval(question_means(table), confidence, resamples, seed)


def pass_at_k_score(table: Mapping[str, tuple[int, int]], k: int) -> float:
    """pass@k averaged over questions, each from its n samples with the unbiased estimator (needs n >= k)."""
    _check(table)
    short = [q for q, (_, n) in table.items() if n < k]
    if short:
        raise ValueError(f"pass@{k} needs at least {k} samples per question; {len(short)} have fewer "
                         f"(e.g. {sorted(short)[:3]})")
    return sum(pass_at_k(n, c, k) for c, n in table.values()) / len(table)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (A right and B wrong, A wrong and B right):
    under no difference each discordant question is a fair coin."""
    m = a_only + b_only
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def sign_flip_test(differences: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided paired permutation p-value of the mean per-question difference: under no difference each
    question's difference is as likely negated. Every flip pattern up to ``EXACT_SIGN_FLIP_MAX`` questions;
    beyond, ``resamples`` seeded patterns, counting the observed one ((1 + extreme) / (1 + resamples))."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("sign_flip_test: no differences")
    observed = abs(d.mean())
    tol = 1e-12
    if d.size <= EXACT_SIGN_FLIP_MAX:
        signs = np.array(list(product((1.0, -1.0), repeat=d.size)))
        return float(np.mean(np.abs(signs @ d / d.size) >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, d.size))
    extreme = int(np.sum(np.abs(signs @ d / d.size) >= observed - tol))
    return (1 + extreme) / (1 + resamples)


class QuestionMismatch(ValueError):
    """Two results that do not cover the same questions."""


def common_questions(a: Mapping[str, Any], b: Mapping[str, Any], allow_subset: bool = False) -> list[str]:
    """The question ids both results cover, sorted. Raises :class:`QuestionMismatch` naming the ids that differ
    unless ``allow_subset`` (then only when none is shared)."""
    shared = sorted(set(a) & set(b))
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if not shared:
        raise QuestionMismatch(f"the two results share no question ids (A: {len(a)} questions, e.g. "
                               f"{sorted(a)[:3]}; B: {len(b)}, e.g. {sorted(b)[:3]}): compare results on the same "
                               "task and questions")
    if (only_a or only_b) and not allow_subset:
        raise QuestionMismatch(f"the two results cover different questions: {len(only_a)} only in A (e.g. "
                               f"{only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]}), {len(shared)} in both; "
                               "a paired comparison needs the same questions (compare on the shared ones with "
                               "--common-only)")
    return shared


def paired_comparison(a: Mapping[str, tuple[int, int]], b: Mapping[str, tuple[int, int]],
                      confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED,
                      allow_subset: bool = False) -> Paired:
    """B minus A per question: the mean difference, its paired bootstrap interval (questions resampled, both
    sides together) and a paired test (exact McNemar when both have one sample per question, else sign-flip)."""
    ids = common_questions(a, b, allow_subset)
    ta, tb = {q: a[q] for q in ids}, {q: b[q] for q in ids}
    ma, mb = question_means(ta), question_means(tb)
    d = mb - ma
    diff = bootstrap_interval(d, confidence, resamples, seed)  # the same questions drawn for both sides
    a_only, b_only = int(np.sum(d < 0)), int(np.sum(d > 0))
    if single_sample(ta) and single_sample(tb):
        p, test = mcnemar_exact(a_only, b_only), "exact McNemar"
    else:
        p, test = sign_flip_test(d, resamples, seed), "sign-flip permutation"
    return Paired(questions=len(ids), accuracy_a=float(ma.mean()), accuracy_b=float(mb.mean()),
                  difference=float(d.mean()), low=diff.low, high=diff.high, p_value=p, test=test, a_only=a_only, b_only=b_only)
