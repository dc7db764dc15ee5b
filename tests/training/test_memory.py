"""The pre-launch memory plan on the paper's setting (Qwen2.5-32B dimensions, no weights needed)."""
import pytest
from transformers import Qwen2Config

from components.config import ConfigError, SFTConfig
from components.training.memory import check_fits, param_counts, sft_memory_plan

QWEN25_32B = Qwen2Config(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                         num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False)
S1 = SFTConfig(epochs=5, learning_rate=1e-5, global_batch_size=16, per_device_batch_size=1, block_size=32768,
               bf16=True, gradient_checkpointing=True, world_size=16)


def test_param_count_matches_the_published_size():
    total, largest = param_counts(QWEN25_32B)
    assert 32.5e9 < total < 33.0e9  # Qwen2.5-32B: 32.8B with embeddings
    assert largest == 152064 * 5120  # the embedding is the largest layer


def test_s1_recipe_fits_16_h100s_but_not_one():
    plan = sft_memory_plan(QWEN25_32B, S1, gpus_per_node=8, nodes=2)
    check_fits(plan, 80)
    assert plan.gpus == 16 and plan.gpu_gib < 80
    one = sft_memory_plan(QWEN25_32B, S1, gpus_per_node=1, nodes=1)
    with pytest.raises(ConfigError, match=r"sft: does not fit: 32\.\d+B params on 1 GPU\(s\).* > 80 GiB"):
        check_fits(one, 80)


def test_checkpointing_is_what_makes_32k_tokens_fit():
    no_ckpt = SFTConfig(**{**S1.model_dump(), "gradient_checkpointing": False})
    plan = sft_memory_plan(QWEN25_32B, no_ckpt, gpus_per_node=8, nodes=2)
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        check_fits(plan, 80)


def test_peak_cpu_ram_at_load_is_one_copy_per_node_when_zero3_loads_sharded():
    plan = sft_memory_plan(QWEN25_32B, S1, gpus_per_node=8, nodes=2)
    weights = param_counts(QWEN25_32B)[0] * 2 / 2**30  # bf16
    assert plan.load_cpu_gib_per_node == pytest.approx(weights) and 60 < weights < 62
    assert plan.load_cpu_gib_per_node_unsharded == pytest.approx(9 * weights)  # 8 ranks' copies + the page cache
    assert "peak CPU RAM at load 61.0 GiB per node" in plan.describe()
    print(plan.describe())
