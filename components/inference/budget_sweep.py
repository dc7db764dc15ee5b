"""Budget forcing at many budgets from one thinking run per question.

When forcing only cuts thinking short (no minimum, no forced waits) and decoding
is greedy, the run at budget ``B`` thinks exactly the first ``B`` tokens of the
run capped only by the engine's unlimited cap: the model chooses every thinking
token the same way until the cut. So a sweep generates the capped run once and,
per budget, only the answers of the questions whose thinking reached ``B``: the
prompt, the first ``B`` thinking tokens, the delimiter and the answer prefix are
prefilled as token ids, and the answer is generated as the forced run generates
it (``<|im_start|>`` banned, end of turn after ``max_answer_tokens``). A question
that ended its thinking before ``B`` is answered exactly as in the capped run.

The results (thinking, answer, token counts, waits, hit_budget) equal those of
one forced run per budget up to float-level differences between prefilled and
incrementally decoded attention (none on the demo's model; ``token_ids`` carry
no batch padding after the end of turn); the cost is one thinking run plus a
short answer run per budget, instead of a thinking run per budget.

    by_budget = budget_sweep(engine, prompts, [48, 96, None], spec, Sampling())
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from components.inference.budget_forcing import BudgetSpec, ForcedResult
from components.inference.engine import Sampling


def shares_thinking(spec: BudgetSpec, sampling: Sampling, budgets: Sequence[Optional[int]], cap: int) -> bool:
    """Whether every budget's run is a cut of the capped run: greedy, forcing that only cuts, budgets within
    the cap (a larger budget would think past the capped run)."""
    return (sampling.greedy and spec.min_thinking_tokens == 0 and spec.num_waits == 0
            and all(b is None or b <= cap for b in budgets))


def answer_sampling(engine, spec: BudgetSpec, sampling: Sampling) -> Sampling:
    """The forced run's answer phase as plain generation: its free tokens, ``<|im_start|>`` and the
    never-generated tokens banned, stopping at ``<|im_end|>``."""
    v = engine.vocab
    free = spec.max_answer_tokens - len(v.encode(spec.final_answer_prefix) if spec.final_answer_prefix else ())
    return dataclasses.replace(
        sampling, max_new_tokens=max(free, 0), min_new_tokens=0, stop_token_ids=(v.end_id,),
        banned_token_ids=tuple(sampling.banned_token_ids) + (v.stop_ids[0], *v.banned_ids))


def cut_at(engine, prompt_ids: Sequence[Sequence[int]], capped: Sequence[ForcedResult], budget: int,
           spec: BudgetSpec, sampling: Sampling) -> list[ForcedResult]:
    """The results at ``budget``: the capped run's where thinking ended before it, else answers after the
    first ``budget`` thinking tokens."""
    v = engine.vocab
    prefix = tuple(v.encode(spec.final_answer_prefix)) if spec.final_answer_prefix else ()
    rows = [i for i, r in enumerate(capped) if r.thinking_tokens >= budget]
    heads = {i: list(capped[i].token_ids[:budget]) + list(v.delimiter_ids) + list(prefix) for i in rows}
    params = answer_sampling(engine, spec, sampling)
    completions = (engine.generate([list(prompt_ids[i]) + heads[i] for i in rows], params)
                   if rows and params.max_new_tokens > 0 else [None] * len(rows))
    out = list(capped)
    for i, c in zip(rows, completions):
        answer = [t for t in (c.token_ids if c else []) if t != v.end_id and t not in v.banned_ids]
        thinking = list(capped[i].token_ids[:budget])
        out[i] = ForcedResult(
            thinking=v.tokenizer.decode(thinking), answer=v.tokenizer.decode(list(prefix) + answer),
            thinking_tokens=budget, answer_tokens=len(prefix) + len(answer), waits_used=0, hit_budget=True,
            token_ids=heads[i] + answer + [v.end_id])
    return out


def budget_sweep(engine, prompts: Sequence[str], budgets: Sequence[Optional[int]], spec: BudgetSpec,
                 sampling: Sampling, progress: Optional[Callable[[int], None]] = None
                 ) -> dict[Optional[int], list[ForcedResult]]:
    """Budget forcing at each of ``budgets`` (None: the engine's unlimited cap) under ``spec``: one capped
    thinking run, then per budget the answers of the questions it cuts. Call only when
    :func:`shares_thinking` holds."""
    # token ids for both runs, so the answers continue exactly the prompt the thinking was generated from
    ids = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    capped = engine.generate_forced(ids, [dataclasses.replace(spec, max_thinking_tokens=None)] * len(prompts),
                                    sampling, progress)
    return {b: capped if b is None else cut_at(engine, ids, capped, b, spec, sampling) for b in budgets}
