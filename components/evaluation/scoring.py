"""Scores that can be trusted: avg@k, pass@k, mean ± standard error across seeds.

Records are per-sample dicts/Generations with ``question_id``, ``budget``,
``seed``, ``correct`` and ``thinking_tokens``. With k samples per question,
avg@k is the mean correctness over all samples, pass@k the share of questions
solved by at least one sample (the unbiased estimator with n = k), and the
per-seed accuracies give mean ± standard error (0 with one seed).

Only the current sweep counts: :func:`current_sweep` keeps the records of the
sweep's questions, seeds and budgets (a resumed sweep's file may hold samples
of questions or seeds since dropped), and failed requests (``failed: true``)
are never scored, only counted (:func:`failures`).

    table = score_by_budget(current_sweep(records, question_ids, seeds, budgets))
"""
from __future__ import annotations

import math
from collections import defaultdict
from math import comb
from typing import Any, Iterable, Optional


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"k ({k}) > samples ({n})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def _get(r: Any, key: str, default: Any = None):
    return r.get(key, default) if isinstance(r, dict) else getattr(r, key, default)


def current_sweep(records: Iterable[Any], question_ids: Iterable[str], seeds: Iterable[int],
                  budgets: Optional[Iterable[Optional[int]]] = None) -> list[Any]:
    """The records of this sweep only (its questions x seeds x budgets), one per sample key (the last wins)."""
    qs, ss = set(question_ids), set(seeds)
    bs = set(budgets) if budgets is not None else None
    out: dict[tuple, Any] = {}
    for r in records:
        q, s, b = _get(r, "question_id"), _get(r, "seed"), _get(r, "budget")
        if q in qs and s in ss and (bs is None or b in bs):
            out[(q, b, s)] = r
    return list(out.values())


def failures(records: Iterable[Any]) -> list[Any]:
    return [r for r in records if _get(r, "failed", False)]


def score(records: Iterable[Any], k: Optional[int] = None) -> dict:
    by_q: dict[str, list[bool]] = defaultdict(list)
    by_seed: dict[int, list[bool]] = defaultdict(list)
    tokens = []
    for r in records:
        if _get(r, "failed", False):
            continue
        by_q[_get(r, "question_id")].append(bool(_get(r, "correct")))
        by_seed[_get(r, "seed")].append(bool(_get(r, "correct")))
        tokens.append(_get(r, "thinking_tokens"))
    if not by_q:
        raise ValueError("no records to score")
    n = min(len(v) for v in by_q.values())
    k = k or n
    seed_acc = [sum(v) / len(v) for v in by_seed.values()]
    mean = sum(seed_acc) / len(seed_acc)
    se = (math.sqrt(sum((a - mean) ** 2 for a in seed_acc) / (len(seed_acc) - 1) / len(seed_acc))
          if len(seed_acc) > 1 else 0.0)
    return {
        "questions": len(by_q), "samples_per_question": n, "k": k,
        f"avg@{k}": sum(sum(v) / len(v) for v in by_q.values()) / len(by_q),
        f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in by_q.values()) / len(by_q),
        "accuracy_mean": mean, "accuracy_se": se, "seeds": len(seed_acc),
        "avg_thinking_tokens": sum(tokens) / len(tokens),
    }


def score_by_budget(records: Iterable[Any]) -> dict[str, dict]:
    """Scores per budget over the successful samples (a budget whose every request failed is left out)."""
    groups: dict[Any, list] = defaultdict(list)
    for r in records:
        if not _get(r, "failed", False):
            groups[_get(r, "budget")].append(r)
    return {str(b): score(rs) for b, rs in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}
