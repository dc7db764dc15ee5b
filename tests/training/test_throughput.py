"""Honest MFU: the device's real peak, matmul parameters only, attention over each example's own length."""
import pytest
from transformers import Qwen2Config

from components.training.throughput import matmul_params, mfu, model_flops, peak_flops

QWEN25_32B = Qwen2Config(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                         num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False)


@pytest.mark.parametrize("name, gib, peak", [
    ("NVIDIA H100 80GB HBM3", 79.1, 989.4e12),   # SXM5
    ("NVIDIA H100 PCIe", 79.1, 756e12),
    ("NVIDIA H100 NVL", 93.1, 835e12),
    ("NVIDIA H200", 139.8, 989.4e12),
    ("NVIDIA H200 NVL", 139.8, 835e12),
    ("NVIDIA A100-SXM4-80GB", 79.1, 312e12),
    ("NVIDIA GeForce RTX 4090", 23.6, None),     # unknown: no MFU rather than a made-up one
])
def test_peak_by_reported_name_and_memory(name, gib, peak):
    assert peak_flops(name, gib) == peak


def test_embedding_is_not_counted_but_the_head_is():
    from components.training.memory import param_counts
    total, _ = param_counts(QWEN25_32B)
    assert matmul_params(QWEN25_32B) == total - 152064 * 5120
    tied = Qwen2Config(**{**QWEN25_32B.to_dict(), "tie_word_embeddings": True})
    assert matmul_params(tied) == param_counts(tied)[0]  # the tied table is used once, as the head


def test_attention_is_per_example_not_per_block():
    n, layers, hidden = 1000, 2, 64
    four = model_flops(n, layers, hidden, lengths_sum=4 * 100, lengths_sq_sum=4 * 100 ** 2)  # 4 examples of 100
    assert four == 6 * n * 400 + 12 * layers * hidden * 40_000
    one = model_flops(n, layers, hidden, lengths_sum=400, lengths_sq_sum=400 ** 2)  # one example of 400
    assert one - four == 12 * layers * hidden * (160_000 - 40_000)
    assert mfu(four, seconds=2.0, devices=4, peak=1e12) == pytest.approx(four / (2.0 * 4 * 1e12))
    assert mfu(four, seconds=2.0, devices=4, peak=None) is None  # a CPU: no peak


def test_the_collator_counts_what_the_attention_term_needs():
    from components.training.packing import PackedCollator, PackedRow
    from components.training.sft import CountingCollator, PadCollator
    plain = CountingCollator(PadCollator(0))
    plain([{"input_ids": [1] * 3, "labels": [1] * 3}, {"input_ids": [1] * 5, "labels": [1] * 5}])
    assert (plain.real, plain.real_sq, plain.computed) == (8, 9 + 25, 10)
    packed = CountingCollator(PackedCollator(0))
    packed([vars(PackedRow([1] * 8, [1] * 8, [3, 5]))])
    assert (packed.real, packed.real_sq) == (8, 9 + 25)  # the packed row's attention is per example, not 8^2
