"""Sequence packing: rows never overflow, nothing is lost or duplicated, no attention across examples."""
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from components.config import SFTConfig
from components.formatting import IGNORE_INDEX, TokenizedExample
from components.training.packing import PackedCollator, block_causal_mask, pack, padding_efficiency
from components.training.sft import train_sft


def _examples(n=40, seed=0, lo=5, hi=60):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length, prompt = rng.randint(lo, hi), rng.randint(2, 4)
        ids = [rng.randint(3, 250) for _ in range(length)]
        out.append(TokenizedExample(ids, [IGNORE_INDEX] * prompt + ids[prompt:], prompt))
    return out


def test_first_fit_decreasing_keeps_every_example_once_within_the_block():
    examples = _examples()
    rows = pack(examples, block_size=128)
    assert all(len(r.input_ids) <= 128 and sum(r.lengths) == len(r.input_ids) for r in rows)
    flattened = sorted(tuple(r.input_ids[sum(r.lengths[:k]):sum(r.lengths[:k + 1])])
                       for r in rows for k in range(len(r.lengths)))
    assert flattened == sorted(tuple(e.input_ids) for e in examples)
    assert len(rows) <= -(-sum(len(e.input_ids) for e in examples) // 128) + 1  # near the lower bound
    with pytest.raises(ValueError, match="sft.block_size: example"):
        pack(_examples(lo=200, hi=210), block_size=128)


def test_mask_is_block_diagonal_causal():
    m = block_causal_mask([2, 3], width=6, dtype=torch.float32) == 0
    assert m[1, 0] and not m[0, 1]              # causal inside the first example
    assert not m[2, 1] and m[4, 2]              # the second example never sees the first
    assert m[5, 5] and not m[5, 4]              # padding sees only itself


def test_packed_loss_equals_the_examples_one_by_one(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    examples = _examples(n=3, lo=8, hi=20)
    (row,) = pack(examples, block_size=64)
    batch = PackedCollator(0)([vars(row)])
    with torch.no_grad():
        packed = model(**batch).loss
        total, count = 0.0, 0
        for e in examples:  # HF shifts labels inside: one prediction fewer per example
            n = sum(1 for t in e.labels[1:] if t != IGNORE_INDEX)
            loss = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
            total, count = total + loss.item() * n, count + n
    assert packed.item() == pytest.approx(total / count, rel=1e-5)
    with torch.no_grad():  # without the mask the later examples would see the earlier ones
        leaky = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert abs(leaky.item() - packed.item()) > 1e-4


def test_training_with_packing_cuts_padding(tiny_model_dir, tmp_path):
    examples = _examples(n=64, lo=10, hi=120)
    base = dict(epochs=1, global_batch_size=8, per_device_batch_size=8, deepspeed="never", block_size=256)
    plain = train_sft(SFTConfig(**base), tiny_model_dir, examples, tmp_path / "a", tmp_path / "wa")
    packed = train_sft(SFTConfig(**base, packing=True), tiny_model_dir, examples, tmp_path / "b", tmp_path / "wb")
    assert packed["packing"] and packed["rows"] < len(examples)
    assert packed["padding_efficiency"] >= 0.95 > plain["padding_efficiency"]
    assert padding_efficiency([10, 10, 5, 5], batch_size=2) == pytest.approx(30 / 30)
    assert padding_efficiency([10, 5], batch_size=2) == pytest.approx(15 / 20)
    assert packed["mfu"] is None  # no accelerator peak on a CPU
