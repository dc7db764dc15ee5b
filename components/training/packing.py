"""Sequence packing for SFT: several examples per row, no attention across examples.

Examples are packed first-fit-decreasing into rows of at most ``block_size``
tokens (deterministic; an example is never split). Each row carries its
examples' lengths; the collator builds ``position_ids`` that restart at 0 for
every example and, for ``sdpa``/``eager`` attention, a block-diagonal causal 4D
mask, so a token attends only to earlier tokens of its own example: the loss of
a packed row equals the sum of its examples' losses computed one by one (tested).
With ``flash_attention_2`` the restarting ``position_ids`` alone delimit the
examples (varlen kernels), and no O(L^2) mask is built.

    rows = pack(examples, block_size=512); batch = PackedCollator(pad_id)(rows[:8])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from components.formatting import IGNORE_INDEX, TokenizedExample


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    lengths: list[int]


def pack(examples: list[TokenizedExample], block_size: int) -> list[PackedRow]:
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i].input_ids)
        if n > block_size:
            raise ValueError(f"sft.block_size: example {i} has {n} tokens > block_size {block_size}; "
                             "the tokenize stage leaves such examples out, raise block_size to keep them")
        slot = next((b for b, room in enumerate(free) if room >= n), None)
        if slot is None:
            bins.append([]), free.append(block_size)
            slot = len(bins) - 1
        bins[slot].append(i)
        free[slot] -= n
    rows = []
    for members in bins:
        members.sort()  # the original order inside a row
        rows.append(PackedRow([t for i in members for t in examples[i].input_ids],
                              [t for i in members for t in examples[i].labels],
                              [len(examples[i].input_ids) for i in members]))
    return rows


def block_causal_mask(lengths: list[int], width: int, dtype: torch.dtype) -> torch.Tensor:
    """[width, width] additive mask: 0 where a token may attend (same example, not later), min elsewhere."""
    allowed = torch.zeros(width, width, dtype=torch.bool)
    start = 0
    for n in lengths:
        allowed[start:start + n, start:start + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        start += n
    allowed[start:, start:] = torch.eye(width - start, dtype=torch.bool)  # padding sees itself only (no NaN rows)
    return torch.zeros(width, width, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


@dataclass
class PackedCollator:
    pad_id: int
    attn_implementation: str = "sdpa"
    dtype: torch.dtype = torch.float32

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            positions[i, :n] = torch.cat([torch.arange(k) for k in b["lengths"]])
        out = {"input_ids": ids, "labels": labels, "position_ids": positions}
        if self.attn_implementation != "flash_attention_2":
            out["attention_mask"] = torch.stack([block_causal_mask(b["lengths"], width, self.dtype)
                                                 for b in batch])[:, None]
        return out


def padding_efficiency(lengths_per_row: list[int], batch_size: int) -> float:
    """Real tokens / tokens computed, when rows of these lengths are batched in order and padded."""
    real = sum(lengths_per_row)
    computed = sum(max(lengths_per_row[i:i + batch_size]) * len(lengths_per_row[i:i + batch_size])
                   for i in range(0, len(lengths_per_row), batch_size))
    return real / computed if computed else 1.0
