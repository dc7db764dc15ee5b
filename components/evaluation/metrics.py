"""s1's test-time-scaling metrics over a sweep of budgets (Control, Scaling, Performance; Muennighoff et al. 2025, §3).

* Control: fraction of runs whose thinking length stays within the
  [min, max] asked for (a run with no max only needs to reach the min).
* Scaling: mean slope of the piecewise-linear accuracy-vs-thinking-tokens
  curve over all pairs of sweep points with b > a; ``None`` with fewer than
  two distinct points (the slope is undefined there, not zero).
* Performance: the best accuracy over the sweep.

    summary = sweep_metrics(points, runs)
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional, Sequence


@dataclass(frozen=True)
class SweepPoint:
    """One budget of a sweep: mean thinking tokens and accuracy there."""

    budget: Optional[int]
    avg_thinking_tokens: float
    accuracy: float


def point_compute(point: dict) -> float:
    """A report point's average compute tokens per question (thinking, summed over samples and nodes, plus probes
    and discarded tries); a point from before compute was counted apart: its thinking tokens."""
    return point.get("avg_compute_tokens", point["avg_thinking_tokens"])


@dataclass(frozen=True)
class Run:
    thinking_tokens: int
    min_tokens: int = 0
    max_tokens: Optional[int] = None


def control(runs: Sequence[Run]) -> float:
    if not runs:
        raise ValueError("control needs at least one run")
    ok = sum(r.min_tokens <= r.thinking_tokens and (r.max_tokens is None or r.thinking_tokens <= r.max_tokens)
             for r in runs)
    return ok / len(runs)


def scaling(points: Sequence[SweepPoint]) -> Optional[float]:
    slopes = [(b.accuracy - a.accuracy) / (b.avg_thinking_tokens - a.avg_thinking_tokens)
              for a, b in combinations(sorted(points, key=lambda p: p.avg_thinking_tokens), 2)
              if b.avg_thinking_tokens > a.avg_thinking_tokens]
    return sum(slopes) / len(slopes) if slopes else None


def performance(points: Sequence[SweepPoint]) -> float:
    if not points:
        raise ValueError("performance needs at least one sweep point")
    return max(p.accuracy for p in points)


def sweep_metrics(points: Sequence[SweepPoint], runs: Sequence[Run]) -> dict[str, Optional[float]]:
    return {"control": control(runs), "scaling": scaling(points), "performance": performance(points)}
