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

import dataclasses
from typing import Optional, Sequence, Union

from components.inference.budget_forcing import BudgetSpec, ForcingVocab

MARGIN_TOKENS = 8  # positions left free after the answer: a retokenised boundary never reaches the context's end


def no_budget_cap(unlimited: int, context_length: Optional[int], prompt_tokens: int, after_thinking: int,
                  margin: int = MARGIN_TOKENS) -> int:
    """Most thinking tokens a request without a budget may think: ``unlimited``, or less where the context ends
    first (``after_thinking``: the tokens generated after the thinking at most). May be <= 0: no room to think."""
    if not context_length:
        return unlimited
    return min(unlimited, context_length - prompt_tokens - after_thinking - margin)


def after_thinking_tokens(spec: BudgetSpec, vocab: ForcingVocab) -> int:
    """Tokens generated after the thinking at most: delimiter, answer prefix, answer, end of turn."""
    prefix = len(vocab.encode(spec.final_answer_prefix)) if spec.final_answer_prefix else 0
    return len(vocab.delimiter_ids) + prefix + spec.max_answer_tokens + 1


def prompt_length(tokenizer, prompt: Union[str, Sequence[int]]) -> int:
    """Tokens of a prompt given as text (no special tokens added, as the engines encode it) or as token ids."""
    if isinstance(prompt, str):
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return len(prompt)


def capped_specs(prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec], vocab: ForcingVocab,
                 tokenizer, unlimited: int, context_length: Optional[int]) -> list[BudgetSpec]:
    """``specs`` as an in-process engine runs them: each spec without a budget gets its prompt's
    :func:`no_budget_cap` (at least 0: a prompt that fills the context answers at once); budgeted ones as given."""
    out = []
    for prompt, spec in zip(prompts, specs):
        if spec.max_thinking_tokens is None:
            cap = no_budget_cap(unlimited, context_length, prompt_length(tokenizer, prompt),
                                after_thinking_tokens(spec, vocab))
            spec = dataclasses.replace(spec, max_thinking_tokens=max(cap, 0))
        out.append(spec)
    return out
