"""Quality filter: drop API errors, empty/truncated traces and badly formatted questions.

Each check returns a reason string or None; :func:`quality_reason` gives the
first reason that applies, so the filter report counts drops per reason.

    reason = quality_reason(example, cfg.quality)
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from components.config import QualityConfig
from components.records import Example

_FIGURE = re.compile(r"\b(figure|diagram|image|picture|graph)\s+(above|below|shown)|\bshown in the (figure|diagram|image)"
                     r"|\[asy\]|!\[|<img", re.I)
_ASCII_ART = re.compile(r"^[\s|+\-_=/\\*#.xo]{6,}$", re.M)
_NUMBERING = re.compile(r"\((\d+)\)")


def _api_error(ex: Example, cfg: QualityConfig) -> Optional[str]:
    return "api_error" if not ex.trace.ok else None


def _empty_or_truncated(ex: Example, cfg: QualityConfig) -> Optional[str]:
    thinking = ex.trace.thinking.strip()
    if len(thinking) < cfg.min_trace_chars:
        return "empty_trace"
    if len(thinking) > cfg.max_trace_chars:
        return "overlong_trace"
    if not ex.trace.answer.strip():
        return "truncated_trace"
    return None


def _missing_figure(ex: Example, cfg: QualityConfig) -> Optional[str]:
    return "missing_figure" if _FIGURE.search(ex.question.question) else None


def _ascii_art(ex: Example, cfg: QualityConfig) -> Optional[str]:
    return "ascii_art" if _ASCII_ART.search(ex.question.question) else None


def _inconsistent_numbering(ex: Example, cfg: QualityConfig) -> Optional[str]:
    nums = [int(n) for n in _NUMBERING.findall(ex.question.question)]
    if len(nums) >= 2 and nums != list(range(nums[0], nums[0] + len(nums))):
        return "inconsistent_numbering"
    return None


CHECKS: list[Callable[[Example, QualityConfig], Optional[str]]] = [
    _api_error, _empty_or_truncated, _missing_figure, _ascii_art, _inconsistent_numbering,
]


def quality_reason(ex: Example, cfg: QualityConfig) -> Optional[str]:
    for check in CHECKS:
        reason = check(ex, cfg)
        if reason:
            return reason
    return None
