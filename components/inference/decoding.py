"""Batched decoding in which finished rows leave the batch.

``model.generate`` keeps every row of a batch until its last row finishes: a batch of
100 questions thinking 54-231 tokens runs 231 full-width steps, four in ten of them
on rows that are already done (the demo's evaluation; the per-step cost of a small
model grows with the rows). Here a row that finishes is dropped from the batch, its
KV cache with it (``Cache.batch_select_indices``), so each step costs only the rows
still generating. Prefill, positions (left padding) and the cache are what
``generate`` uses, so greedy outputs are ``generate``'s on a CPU in float32
(``tests/inference/test_decoding.py``; elsewhere a kernel chosen for a smaller batch
may break a near-tie differently, as ``generate`` itself is not batch-invariant).
A model whose cache is not made of plain or sliding-window attention layers
(linear-attention hybrids that keep their state in ``past_key_values``) keeps its
finished rows in the batch, as ``generate`` does; a model that returns no
``past_key_values`` at all (Mamba, RWKV) is refused with an error naming it.

Token choice is the caller's: ``pick(rows, scores)`` gets the still-active rows' indices
and their float32 next-token scores and returns one token per row, and ``done(row, token)``
says whether that token ended the row (``max_new_tokens`` ends every row).
:func:`choose_tokens` is the choice itself: greedy, or sampled with temperature and
top-p, each row drawing from its own generator, so a sampled row does not depend on
the rows beside it.

    tokens = decode(model, enc["input_ids"], enc["attention_mask"], 64,
                    pick=lambda rows, scores: scores.argmax(-1), done=lambda row, tok: tok == eos)
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

SHRINKABLE_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)  # exactly these: hybrids subclass them


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def shrinkable_cache(model) -> Optional[DynamicCache]:
    """A cache rows can leave (every layer a plain or sliding-window KV layer), or None."""
    supports = getattr(model, "_supports_default_dynamic_cache", lambda: True)
    if not supports():
        return None
    cache = DynamicCache(config=model.config)
    return cache if all(type(layer) in SHRINKABLE_LAYERS for layer in cache.layers) else None


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           pick: Callable[[list[int], torch.Tensor], torch.Tensor],
           done: Callable[[int, int], bool]) -> list[list[int]]:
    """Each row's generated tokens (its finishing token included), the batch shrinking as rows finish."""
    generated: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    if max_new_tokens <= 0:
        return generated
    device = model.device
    mask = attention_mask.to(device)
    position = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = shrinkable_cache(model)  # None: the model makes its own, and finished rows stay in the batch
    shrink = cache is not None
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    with_positions = _accepts(model, "position_ids")
    out = model(input_ids=input_ids.to(device), attention_mask=mask, past_key_values=cache, use_cache=True,
                **({"position_ids": position} if with_positions else {}), **extra)
    if getattr(out, "past_key_values", None) is None:
        raise NotImplementedError(f"{type(model).__name__} returns no past_key_values: the HF engine decodes with a "
                                  "KV cache; serve this model with engine.backend: vllm")
    position = position[:, -1]
    rows = list(range(input_ids.shape[0]))  # the row behind each batch position
    alive = list(range(len(rows)))          # batch positions still generating (all of them, unless rows stay)
    fed = torch.zeros(len(rows), dtype=torch.long, device=device)  # what each batch position is fed next
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()
        cache, out = out.past_key_values, None  # the step's outputs freed before the next forward
        if len(alive) < len(rows):
            logits = logits[torch.tensor(alive)]
        tokens = pick([rows[i] for i in alive], logits).to(device)
        kept = []
        for i, token in zip(alive, tokens.tolist()):
            generated[rows[i]].append(token)
            if not done(rows[i], token) and len(generated[rows[i]]) < max_new_tokens:
                kept.append(i)
        if not kept:
            break
        fed[torch.tensor(alive)] = tokens
        alive = kept
        if shrink and len(alive) < len(rows):
            index = torch.tensor(alive)  # on the CPU: valid for tensors on any device
            cache.batch_select_indices(index)
            mask, position, fed = mask[index], position[index], fed[index]
            rows, alive = [rows[i] for i in alive], list(range(len(alive)))
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        position = position + 1
        out = model(input_ids=fed[:, None], attention_mask=mask, past_key_values=cache, use_cache=True,
                    **({"position_ids": position[:, None]} if with_positions else {}))
    return generated


def warp(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The sampling distribution's scores: divided by the temperature, outside the top-p nucleus -inf."""
    return top_p_filter(scores / temperature, top_p)


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Scores outside each row's nucleus (the fewest most likely tokens with probability >= top_p) set to -inf."""
    if top_p >= 1.0:
        return scores
    ordered, order = scores.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p  # the probability of the tokens above already reaches top_p
    drop[..., 0] = False  # the most likely token always stays
    return scores.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def sample(scores: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row from softmax(scores), row ``i`` drawing one uniform from ``generators[i]`` (CPU
    generators; only those numbers cross to the scores' device). Tokens of probability 0 are never drawn."""
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    cdf = scores.softmax(dim=-1).double().cumsum(dim=-1)
    target = (u.to(cdf.device) * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(scores.shape[-1] - 1)


def choose_tokens(scores: torch.Tensor, temperature: float, top_p: float,
                  generators: Optional[Sequence[torch.Generator]] = None) -> torch.Tensor:
    """The next token per row: the argmax (temperature 0), else a draw from the row's tempered top-p
    distribution with ``generators[i]`` (the row's own, so its draw is independent of the batch)."""
    if temperature == 0.0:
        return scores.argmax(dim=-1)
    return sample(warp(scores, temperature, top_p), generators)
