"""The thinking cap of a request without a budget ("no budget"), per request.

A no-budget request thinks until the model ends its thinking or until the cap,
then the answer is forced. The cap is ``engine.unlimited_thinking_tokens``,
lowered so that the prompt, the thinking and everything that follows it (the
end-of-thinking delimiter, the final-answer prefix, the answer and its end
token) fit the model's context with a margin to spare. s1 does the same: its
no-budget runs think at most 32,000 of Qwen2.5's 32,768 positions, so the
answer always has room. With ``unlimited_thinking_tokens`` equal to the context
length (s1-32b) the cap is set by the context alone.

    cap = no_budget_cap(unlimited=32768, context_length=32768, prompt_tokens=180, after_thinking=2052)  # 30528
"""
from __future__ import annotations

from typing import Optional

MARGIN_TOKENS = 8  # positions left free after the answer: a retokenised boundary never reaches the context's end


def no_budget_cap(unlimited: int, context_length: Optional[int], prompt_tokens: int, after_thinking: int,
                  margin: int = MARGIN_TOKENS) -> int:
    """Most thinking tokens a request without a budget may think: ``unlimited``, or less where the context ends
    first (``after_thinking``: the tokens generated after the thinking at most). May be <= 0: no room to think."""
    if not context_length:
        return unlimited
    return min(unlimited, context_length - prompt_tokens - after_thinking - margin)
