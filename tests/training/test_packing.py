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


def _one_by_one(model, examples):
    """Token-weighted mean loss of the examples run alone (HF shifts labels: one prediction fewer each)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            n = sum(1 for t in e.labels[1:] if t != IGNORE_INDEX)
            loss = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
            total, count = total + loss.item() * n, count + n
    return total / count


LOSS_DIFFS: dict = {}  # path -> |packed - one by one|, printed for the record


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flash_attention_2"])
def test_packed_loss_equals_the_examples_one_by_one(tiny_model_dir, attn):
    """Three packed rows in one micro-batch (per-device batch 3): the loss equals the examples' one by one.
    flash_attention_2 runs transformers' own flash dispatch with plain-torch kernels (tests/support/cpu_flash.py);
    the collator flattens the micro-batch into one row, the only form transformers 5.19 reads as packed."""
    from contextlib import nullcontext

    from tests.support.cpu_flash import cpu_flash_attention
    load_as = "sdpa" if attn == "flash_attention_2" else attn
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=load_as).eval()
    examples = _examples(n=12, lo=8, hi=40, seed=3)
    rows = pack(examples, block_size=96)
    assert len(rows) >= 3
    members = [e for r in rows[:3] for e in _members(r, examples)]
    batch = PackedCollator(0, attn)([vars(r) for r in rows[:3]])
    with cpu_flash_attention(model) if attn == "flash_attention_2" else nullcontext():
        if attn == "flash_attention_2":
            assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        with torch.no_grad():
            packed = model(**batch).loss.item()
        reference = _one_by_one(model, members)
        LOSS_DIFFS[attn] = abs(packed - reference)
        print(f"{attn}: packed {packed:.6f} one-by-one {reference:.6f} |diff| {LOSS_DIFFS[attn]:.2e}")
        assert packed == pytest.approx(reference, rel=1e-5, abs=1e-6)
        if attn == "flash_attention_2":
            # as under Ulysses: no varlen kwargs, padded to a multiple of 4; position_ids alone delimit the examples
            by_positions = PackedCollator(0, attn, pad_to_multiple_of=4, flash_kwargs=False)([vars(r) for r in rows[:3]])
            with torch.no_grad():
                assert model(**by_positions).loss.item() == pytest.approx(reference, rel=1e-5, abs=1e-6)
            # unpacked rows: [3, block] with restarting position_ids and no mask. transformers' flash dispatch
            # treats position_ids as packing only at batch size 1, so here the examples attend to each other
            leaky = PackedCollator(0, "sdpa")([vars(r) for r in rows[:3]])
            del leaky["attention_mask"]
        else:  # without the block-diagonal mask the later examples see the earlier ones
            leaky = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
        with torch.no_grad():
            assert abs(model(**leaky).loss.item() - packed) > 1e-4


def _members(row, examples):
    """The examples in a packed row, in row order (matched by their token ids)."""
    by_ids = {tuple(e.input_ids): e for e in examples}
    starts = [sum(row.lengths[:k]) for k in range(len(row.lengths))]
    return [by_ids[tuple(row.input_ids[a:a + n])] for a, n in zip(starts, row.lengths)]


def test_collators_give_position_ids_and_pad_to_the_ulysses_degree():
    from components.training.sft import PadCollator
    examples = _examples(n=5, lo=5, hi=13)
    plain = PadCollator(0, pad_to_multiple_of=4)([vars(e) for e in examples])
    width = plain["input_ids"].shape[1]
    assert width % 4 == 0 and width - 4 < max(len(e.input_ids) for e in examples) <= width
    assert torch.equal(plain["position_ids"][2], torch.arange(width))
    rows = pack(examples, block_size=32)
    sdpa = PackedCollator(0, "sdpa", pad_to_multiple_of=4)([vars(r) for r in rows])
    assert sdpa["input_ids"].shape[1] % 4 == 0 and sdpa["attention_mask"].shape[-1] == sdpa["input_ids"].shape[1]
    flat = PackedCollator(0, "flash_attention_2", pad_to_multiple_of=4, flash_kwargs=False)([vars(r) for r in rows])
    real = sum(len(e.input_ids) for e in examples)
    assert flat["input_ids"].shape == (1, -(-real // 4) * 4) and set(flat) == {"input_ids", "labels", "position_ids"}
    pos = flat["position_ids"][0].tolist()
    assert pos.count(0) == len(examples) + (1 if real % 4 else 0)  # one segment per example (+ the padding)
    flat_kw = PackedCollator(0, "flash_attention_2")([vars(r) for r in rows])
    assert flat_kw["cu_seq_lens_q"].tolist()[-1] == real == flat_kw["input_ids"].shape[1]
    assert flat_kw["max_length_q"] == max(len(e.input_ids) for e in examples)


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


def test_sorted_steps_train_on_random_samplings_steps_with_less_padding(tiny_model_dir, tmp_path, monkeypatch):
    """sft.train_sampling: sorted_steps (the tiny profile's, with micro-batches of 8 in a global batch of 16): each
    optimizer step trains on the examples random sampling gives it, shortest first, so each micro-batch pads
    only to its own longest; the loss is the same up to float rounding."""
    import components.training.sft as sft
    seen: dict[str, list] = {}
    real_make = sft.make_collator

    class Recording(sft.CountingCollator):  # every micro-batch the Trainer hands the collator, per sampling
        def __call__(self, batch):
            seen.setdefault(self.sampling, []).append([tuple(b["input_ids"]) for b in batch])
            return super().__call__(batch)

    def recording(cfg, *a, **kw):
        collator = Recording(real_make(cfg, *a, **kw).inner)
        collator.sampling = cfg.train_sampling
        return collator
    monkeypatch.setattr(sft, "make_collator", recording)
    examples = _examples(n=64, lo=10, hi=120)
    base = dict(epochs=2, global_batch_size=16, deepspeed="never", block_size=256, learning_rate=1e-3)
    plain = train_sft(SFTConfig(**base, per_device_batch_size=16), tiny_model_dir, examples, tmp_path / "a",
                      tmp_path / "wa")
    ordered = train_sft(SFTConfig(**base, per_device_batch_size=8, train_sampling="sorted_steps"), tiny_model_dir,
                        examples, tmp_path / "b", tmp_path / "wb")
    assert ordered["steps"] == plain["steps"] == 8
    steps = seen["random"]
    micro = seen["sorted_steps"]
    assert len(micro) == 2 * len(steps) == 16
    for step, short, long in zip(steps, micro[::2], micro[1::2]):
        assert sorted(short + long) == sorted(step)  # the same examples, every example once per epoch
        assert max(map(len, short)) <= min(map(len, long))  # shortest first
    assert ordered["padding_efficiency"] > plain["padding_efficiency"] + 0.1
    assert ordered["train_loss"] == pytest.approx(plain["train_loss"], abs=1e-4)


def test_flash_batches_match_transformers_flattening_collator():
    """The flash-attention micro-batch is what transformers' DataCollatorWithFlattening(return_flash_attn_kwargs)
    gives for the same examples in row order: one row, restarting position_ids, first labels ignored, cu_seq_lens."""
    from transformers import DataCollatorWithFlattening
    examples = _examples(n=9, lo=5, hi=30, seed=4)
    rows = pack(examples, block_size=64)[:3]
    ours = PackedCollator(0, "flash_attention_2")([vars(r) for r in rows])
    in_order = [e for r in rows for e in _members(r, examples)]
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(
        [{"input_ids": e.input_ids, "labels": e.labels} for e in in_order])
    for key in ("input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k"):
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["max_length_q"] == theirs["max_length_q"]
