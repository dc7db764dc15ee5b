"""Sequence packing for SFT: several examples per row, no attention across examples.

Examples are packed first-fit-decreasing into rows of at most ``block_size``
tokens (deterministic; an example is never split). Each row carries its
examples' lengths, and the collator keeps every example to itself, on each path:

* ``sdpa``/``eager``: ``position_ids`` restarting at 0 for every example and a
  block-diagonal causal 4D mask, so a token attends only to earlier tokens of its
  own example.
* ``flash_attention_2``: the micro-batch is flattened into ONE row
  (``DataCollatorWithFlattening``-style, any ``per_device_batch_size``) with
  ``position_ids`` restarting per example, plus ``cu_seq_lens_q/k`` and
  ``max_length_q/k`` for the varlen kernel. transformers 5.19 recognises packed
  rows from ``position_ids`` only when the batch size is 1
  (``modeling_flash_attention_utils._is_packed_sequence``): a [16, block] batch of
  packed rows would silently attend across examples; a [1, 16*block] row never does.
* Under DeepSpeed Ulysses (``pad_to_multiple_of`` = the SP degree) the flattened row is
  padded to a multiple of it, and only ``position_ids`` delimit the examples (Ulysses
  drops any mask and shards every [batch, seq] tensor; the FA2 kernel rebuilds the
  boundaries from the gathered ``position_ids``).

The first label of every example is ignored, so no token is ever trained to predict
the next example's first token: the loss of a packed batch equals the examples'
losses one by one (tested for sdpa, eager and a flash-style varlen kernel on CPU).

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


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _positions(lengths: list[int], width: int) -> torch.Tensor:
    """0..n-1 for every example, then 0..k-1 for the trailing padding (its own segment)."""
    parts = [torch.arange(n) for n in lengths]
    if width > sum(lengths):
        parts.append(torch.arange(width - sum(lengths)))
    return torch.cat(parts)


def _labels(labels: list[int], lengths: list[int]) -> torch.Tensor:
    out = torch.tensor(labels, dtype=torch.long)
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    out[starts] = IGNORE_INDEX  # never a target across an example boundary (HF shifts labels by one)
    return out


@dataclass
class PackedCollator:
    """Packed rows (``input_ids``, ``labels``, ``lengths``) to a batch in which no example sees another.

    ``pad_to_multiple_of``: the sequence length is padded to a multiple of it (the Ulysses degree).
    ``flash_kwargs``: with flash-attention, also return ``cu_seq_lens_*``/``max_length_*`` (off
    under Ulysses, whose data-loader adapter shards every tensor along dim 1)."""

    pad_id: int
    attn_implementation: str = "sdpa"
    dtype: torch.dtype = torch.float32
    pad_to_multiple_of: int = 1
    flash_kwargs: bool = True
    min_length: int = 0  # Ulysses over gloo: every rank's batch the same length

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        if self.attn_implementation == "flash_attention_2":
            return self._flattened(batch)
        width = round_up(max(self.min_length, *(len(b["input_ids"]) for b in batch)), self.pad_to_multiple_of)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = _labels(b["labels"], b["lengths"])
            positions[i] = _positions(b["lengths"], width)
        mask = torch.stack([block_causal_mask(b["lengths"], width, self.dtype) for b in batch])[:, None]
        return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}

    def _flattened(self, batch: list[dict]) -> dict:
        lengths = [n for b in batch for n in b["lengths"]]
        real = sum(lengths)
        width = round_up(max(real, self.min_length), self.pad_to_multiple_of)
        ids = torch.full((1, width), self.pad_id, dtype=torch.long)
        labels = torch.full((1, width), IGNORE_INDEX, dtype=torch.long)
        ids[0, :real] = torch.tensor([t for b in batch for t in b["input_ids"]])
        labels[0, :real] = _labels([t for b in batch for t in b["labels"]], lengths)
        out = {"input_ids": ids, "labels": labels, "position_ids": _positions(lengths, width)[None]}
        if self.flash_kwargs:
            segments = lengths + ([width - real] if width > real else [])
            cu = torch.tensor([0] + segments).cumsum(0).to(torch.int32)
            out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(segments), max_length_k=max(segments))
        return out


def padding_efficiency(lengths_per_row: list[int], batch_size: int) -> float:
    """Real tokens / tokens computed, when rows of these lengths are batched in order and padded."""
    real = sum(lengths_per_row)
    computed = sum(max(lengths_per_row[i:i + batch_size]) * len(lengths_per_row[i:i + batch_size])
                   for i in range(0, len(lengths_per_row), batch_size))
    return real / computed if computed else 1.0
