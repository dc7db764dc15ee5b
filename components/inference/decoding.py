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

A :class:`Brancher` passed to :func:`decode` takes side branches from the loop: after a step,
``heads(rows)`` names the rows to branch and the tokens to force on each (answer probing: the
end-of-thinking delimiter and the answer prefix); each branch runs on a copy of its rows' KV cache
(:func:`fork_cache`: the rows' prefix is not recomputed), decodes up to ``max_new_tokens`` with the
brancher's own ``pick`` and ``done``, reports its tokens and is discarded; the main rows go on as if
nothing had happened. Branching needs a cache rows can leave (else ``heads`` is never asked).

Rows can also join a running batch (continuous batching, as a server wants it): ``refill(active)`` is asked
after each step, with the count of rows still decoding, and returns the prompts (token ids) that join now; they
are prefilled on their own cache, which is merged into the running one (the shorter side left-padded, its
padding masked), and take the next row indices. ``finished(row, tokens)`` is told the moment a row ends, so its
caller need not wait for the batch. Joining needs a cache of plain attention layers (:func:`joinable_cache`);
with any other, ``refill`` is never asked.

    tokens = decode(model, enc["input_ids"], enc["attention_mask"], 64,
                    pick=lambda rows, scores: scores.argmax(-1), done=lambda row, tok: tok == eos)
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Callable, Optional, Protocol, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

SHRINKABLE_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)  # exactly these: hybrids subclass them


def _accepts(model, name: str) -> bool:
    """Whether the model's ``forward`` takes ``name`` (read once per forward function: decoding asks every step)."""
    return name in _parameters(getattr(model.forward, "__func__", model.forward))


@functools.lru_cache(maxsize=64)
def _parameters(forward) -> frozenset[str]:
    return frozenset(inspect.signature(forward).parameters)


def shrinkable_cache(model) -> Optional[DynamicCache]:
    """A cache rows can leave (every layer a plain or sliding-window KV layer), or None."""
    supports = getattr(model, "_supports_default_dynamic_cache", lambda: True)
    if not supports():
        return None
    cache = DynamicCache(config=model.config)
    return cache if all(type(layer) in SHRINKABLE_LAYERS for layer in cache.layers) else None


def joinable_cache(model) -> Optional[DynamicCache]:
    """A cache rows can leave and join (every layer a plain KV layer: a sliding window keeps a different span per
    row once padded; and a model that takes ``position_ids``, so a joined row keeps its own positions), or None."""
    cache = shrinkable_cache(model) if _accepts(model, "position_ids") else None  # else padding shifts positions
    return cache if cache is not None and all(type(layer) is DynamicLayer for layer in cache.layers) else None


def join_cache(cache: DynamicCache, other: DynamicCache) -> None:
    """``other``'s rows appended to ``cache``'s in place, the shorter of the two left-padded with zeros (the
    caller masks the padding)."""
    for layer, extra in zip(cache.layers, other.layers):
        length = max(layer.keys.shape[-2], extra.keys.shape[-2])
        layer.keys = torch.cat([_left_pad(layer.keys, length), _left_pad(extra.keys, length)], 0)
        layer.values = torch.cat([_left_pad(layer.values, length), _left_pad(extra.values, length)], 0)


def trim_left(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Columns masked in every row dropped from the left of ``cache`` (in place) and of ``mask`` (returned): a
    batch rows keep joining would otherwise carry every departed row's length as padding. Positions are the
    rows' own (``position_ids``), so nothing else moves."""
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else mask.shape[1]
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
    return mask[:, first:]


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """``t`` padded with zeros on the left of its sequence dimension (the one before last) to ``length``."""
    return torch.nn.functional.pad(t, (0, 0, length - t.shape[-2], 0)) if t.shape[-2] < length else t


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    """An attention mask left-padded with zeros (masked) to ``width`` columns."""
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


def left_padded(prompts: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids (padding id 0, masked) and attention mask of ``prompts``, left-padded to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


Refill = Callable[[int], Sequence[Sequence[int]]]


class Brancher(Protocol):
    """Side branches taken from the decoding loop (see the module docstring); rows are the caller's indices."""

    max_new_tokens: int  # most tokens a branch generates after its forced head

    def heads(self, rows: list[int]) -> dict[int, Sequence[int]]:
        """Of ``rows`` (each just given its next token), those to branch now and the tokens each branch forces
        after that token."""

    def pick(self, rows: list[int], scores: torch.Tensor) -> torch.Tensor:
        """The branches' next tokens (as :func:`decode`'s ``pick``)."""

    def done(self, row: int, token: int) -> bool:
        """Whether ``token`` ends ``row``'s branch."""

    def report(self, row: int, tokens: list[int]) -> None:
        """``row``'s branch generated ``tokens`` (its finishing token included)."""


def fork_cache(cache: DynamicCache, index: torch.Tensor) -> DynamicCache:
    """A copy of ``cache`` holding only the batch rows ``index``; appending to it leaves ``cache`` as it is
    (each layer's tensors are selected anew, and the layers only ever rebind them)."""
    side = copy.copy(cache)
    side.layers = [copy.copy(layer) for layer in cache.layers]
    side.batch_select_indices(index)
    return side


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           pick: Callable[[list[int], torch.Tensor], torch.Tensor],
           done: Callable[[int, int], bool], brancher: Optional[Brancher] = None,
           refill: Optional[Refill] = None,
           finished: Optional[Callable[[int, list[int]], None]] = None,
           rejected: Optional[Callable[[list[int], Exception], None]] = None) -> list[list[int]]:
    """Each row's generated tokens (its finishing token included), the batch shrinking as rows finish.
    ``brancher``: side branches taken after each step (a model whose cache rows cannot leave takes none).
    ``refill``/``finished``: rows joining between steps and rows reported as they end (module docstring);
    ``rejected(rows, error)``: joining rows whose prefill failed (without it, the failure ends the call);
    ``max_new_tokens`` is each row's own limit, counted from its first token."""
    generated: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    if max_new_tokens <= 0:
        return generated
    mask = attention_mask.to(model.device)
    cache = joinable_cache(model) if refill is not None else None
    if cache is None:
        refill = None
        cache = shrinkable_cache(model)  # None: the model makes its own, and finished rows stay in the batch
    _run(model, cache, input_ids.to(model.device), mask, _positions(mask), max_new_tokens, pick, done,
         list(range(input_ids.shape[0])), generated, brancher if cache is not None else None, refill, finished,
         rejected)
    return generated


def _forward(model, input_ids: torch.Tensor, mask: torch.Tensor, cache, positions: torch.Tensor, prefill: bool):
    extra = {"logits_to_keep": 1} if prefill and _accepts(model, "logits_to_keep") else {}
    if _accepts(model, "position_ids"):
        extra["position_ids"] = positions
    out = model(input_ids=input_ids, attention_mask=mask, past_key_values=cache, use_cache=True, **extra)
    if getattr(out, "past_key_values", None) is None:
        raise NotImplementedError(f"{type(model).__name__} returns no past_key_values: the HF engine decodes with a "
                                  "KV cache; serve this model with engine.backend: vllm")
    return out.logits[:, -1, :].float(), out.past_key_values


def _run(model, cache, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, max_new_tokens: int,
         pick, done, rows: list[int], generated: list[list[int]], brancher: Optional[Brancher],
         refill: Optional[Refill] = None, finished: Optional[Callable[[int, list[int]], None]] = None,
         rejected: Optional[Callable[[list[int], Exception], None]] = None) -> None:
    """Feed ``input_ids`` (batch position ``i`` is row ``rows[i]``) after ``cache``, then decode, appending each
    row's tokens to ``generated[row]``; rows ``refill`` hands over join (new rows appended to ``generated``)."""
    device = model.device
    shrink = cache is not None
    logits, cache = _forward(model, input_ids, mask, cache, positions, prefill=True)
    position = positions[:, -1]
    rows = list(rows)                       # the row behind each batch position
    alive = list(range(len(rows)))          # batch positions still generating (all of them, unless rows stay)
    fed = torch.zeros(len(rows), dtype=torch.long, device=device)  # what each batch position is fed next
    start = [len(generated[r]) for r in rows]
    while True:
        if len(alive) < len(rows):
            logits = logits[torch.tensor(alive)]
        tokens = pick([rows[i] for i in alive], logits).to(device)
        logits = None
        kept = []
        for i, token in zip(alive, tokens.tolist()):
            generated[rows[i]].append(token)
            if not done(rows[i], token) and len(generated[rows[i]]) - start[i] < max_new_tokens:
                kept.append(i)
            elif finished is not None:
                finished(rows[i], generated[rows[i]])
        fed[torch.tensor(alive)] = tokens
        if brancher is not None and kept:
            heads = brancher.heads([rows[i] for i in kept])
            if heads:
                _branch(model, cache, mask, position, fed, rows, heads, brancher)
        joining = list(refill(len(kept))) if refill is not None else []
        if joining:  # the joiners' prefill first: if it fails, they alone fail and the running rows go on
            new_rows = list(range(len(generated), len(generated) + len(joining)))
            generated.extend([] for _ in joining)
            try:
                new_ids, new_mask = left_padded(joining, device)
                new_positions = _positions(new_mask)
                new_logits, new_cache = _forward(model, new_ids, new_mask, joinable_cache(model), new_positions,
                                                 prefill=True)
            except Exception as error:
                if rejected is None:
                    raise
                rejected(new_rows, error)
                joining = []
        if not kept and not joining:
            break
        alive = kept
        if kept:
            if shrink and len(alive) < len(rows):
                index = torch.tensor(alive)  # on the CPU: valid for tensors on any device
                cache.batch_select_indices(index)
                mask, position, fed = mask[index], position[index], fed[index]
                rows, alive, start = [rows[i] for i in alive], list(range(len(alive))), [start[i] for i in alive]
                if refill is not None:
                    mask = trim_left(cache, mask)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            position = position + 1
            logits, cache = _forward(model, fed[:, None], mask, cache, position[:, None], prefill=False)
        if joining:
            if kept:
                width = max(mask.shape[1], new_mask.shape[1])
                join_cache(cache, new_cache)
                mask = torch.cat([_pad_mask(mask, width), _pad_mask(new_mask, width)])
                logits = torch.cat([logits, new_logits])
                position = torch.cat([position, new_positions[:, -1]])
                fed = torch.cat([fed, torch.zeros(len(joining), dtype=torch.long, device=device)])
            else:
                cache, mask, logits, position = new_cache, new_mask, new_logits, new_positions[:, -1]
                fed = torch.zeros(len(joining), dtype=torch.long, device=device)
                rows, start = [], []
            rows, start = rows + new_rows, start + [0] * len(joining)
            alive = list(range(len(rows)))


def _branch(model, cache, mask, position, fed, rows: list[int], heads: dict[int, Sequence[int]],
            brancher: Brancher) -> None:
    """Run ``heads``' branches on forks of ``cache``: each fed its row's last token and its head, then decoded;
    rows that force the same head branch together."""
    where = {row: i for i, row in enumerate(rows)}
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, head in heads.items():
        groups.setdefault(tuple(head), []).append(row)
    for head, members in groups.items():
        index = torch.tensor([where[r] for r in members])
        fork = fork_cache(cache, index)
        feed = torch.cat([fed[index, None], torch.tensor([head] * len(members), dtype=torch.long,
                                                           device=fed.device).reshape(len(members), len(head))], 1)
        side_mask = torch.cat([mask[index], mask.new_ones(len(members), feed.shape[1])], dim=1)
        steps = torch.arange(1, feed.shape[1] + 1, device=position.device)
        out: list[list[int]] = [[] for _ in range(max(rows) + 1)]
        _run(model, fork, feed, side_mask, position[index, None] + steps, brancher.max_new_tokens, brancher.pick,
             brancher.done, members, out, None)
        for row in members:
            brancher.report(row, out[row])


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
