"""Batched decoding in which finished rows leave the batch.

``model.generate`` keeps every row of a batch until its last row finishes: a batch of
100 questions thinking 54-231 tokens runs 231 full-width steps, four in ten of them
on rows that are already done (the demo's evaluation; the per-step cost of a small
model grows with the rows). Here a row that finishes is dropped from the batch, its
KV cache with it (``Cache.batch_select_indices``), so each step costs only the rows
still generating. Prefill, positions (left padding) and the cache are what
``generate`` uses, so greedy outputs are ``generate``'s
(``tests/components/test_decoding.py``).

Token choice is the caller's: ``pick(rows, scores)`` gets the still-active rows' indices
and their float32 next-token scores and returns one token per row, and ``done(row, token)``
says whether that token ended the row (``max_new_tokens`` ends every row).
:func:`choose_tokens` is the choice itself: greedy, or sampled with temperature and
top-p from each row's own generator, so a sampled row does not depend on the rows
beside it.

    tokens = decode(model, enc["input_ids"], enc["attention_mask"], 64,
                    pick=lambda rows, scores: scores.argmax(-1), done=lambda row, tok: tok == eos)
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch
from transformers import DynamicCache


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           pick: Callable[[list[int], torch.Tensor], torch.Tensor],
           done: Callable[[int, int], bool]) -> list[list[int]]:
    """Each row's generated tokens (its finishing token included), the batch shrinking as rows finish."""
    device = model.device
    ids, mask = input_ids.to(device), attention_mask.to(device)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    last_only = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, **last_only)
    rows = list(range(ids.shape[0]))
    generated: list[list[int]] = [[] for _ in rows]
    position = positions[:, -1]
    for _ in range(max_new_tokens):
        tokens = pick(rows, out.logits[:, -1, :].float())
        keep = []
        for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
            generated[row].append(token)
            if not done(row, token) and len(generated[row]) < max_new_tokens:
                keep.append(i)
        if not keep:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, tokens, position = mask[index], tokens[index], position[index]
            rows = [rows[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        position = position + 1
        out = model(input_ids=tokens[:, None].to(device), attention_mask=mask, position_ids=position[:, None],
                    past_key_values=cache, use_cache=True)
    return generated


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Scores outside each row's nucleus (the fewest most likely tokens with probability >= top_p) set to -inf."""
    if top_p >= 1.0:
        return scores
    ordered, order = scores.sort(dim=-1, descending=True)
    before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)  # probability of the tokens above
    drop = before >= top_p
    drop[..., 0] = False  # the most likely token always stays
    return scores.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def choose_tokens(scores: torch.Tensor, temperature: float, top_p: float,
                  generators: Optional[Sequence[torch.Generator]] = None) -> torch.Tensor:
    """The next token per row: the argmax (temperature 0), else a sample of the row's tempered top-p
    distribution drawn from ``generators[i]`` (the row's own, so its draw is independent of the batch)."""
    if temperature == 0.0:
        return scores.argmax(dim=-1)
    probs = top_p_filter(scores / temperature, top_p).softmax(dim=-1).cpu()
    picks = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)]
    return torch.cat(picks).to(scores.device)
