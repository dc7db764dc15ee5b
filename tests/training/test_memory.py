"""The pre-launch memory plan on the paper's setting (Qwen2.5-32B dimensions, no weights needed)."""
import pytest
from transformers import Qwen2Config

from components.config import ConfigError, SFTConfig, load_config
from components.training.memory import check_fits, logits_bytes, param_counts, sft_memory_plan
from tests.conftest import REPO

QWEN25_32B = Qwen2Config(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                         num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False)
S1 = SFTConfig(epochs=5, learning_rate=1e-5, global_batch_size=16, per_device_batch_size=1, block_size=32768,
               bf16=True, gradient_checkpointing=True, world_size=16, sequence_parallel_size=4)
NO_SP = S1.model_copy(update={"sequence_parallel_size": 1})  # 32K-token examples on one GPU each


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


def test_the_loss_logits_are_counted_per_gpu_and_split_by_ulysses():
    """The sequence x vocabulary tensors at 32K tokens: bf16 logits 9.3 GiB, their fp32 upcast 18.6 GiB and the
    gradients of both 27.8 GiB on one GPU; Ulysses gives each GPU its slice of the sequence."""
    parts = {k: v / 2**30 for k, v in logits_bytes(QWEN25_32B, 32768, 1).items()}
    assert parts == pytest.approx({"logits": 9.28, "fp32_upcast": 18.56, "gradients": 27.84}, abs=0.01)
    whole = sft_memory_plan(QWEN25_32B, NO_SP, gpus_per_node=8, nodes=2)
    split = sft_memory_plan(QWEN25_32B, S1, gpus_per_node=8, nodes=2)
    assert whole.logits_gib_per_gpu == pytest.approx(sum(parts.values()))
    assert split.logits_gib_per_gpu == pytest.approx(whole.logits_gib_per_gpu / 4)
    assert whole.gpu_gib == pytest.approx(whole.model_states_gib_per_gpu + whole.activations_gib_per_gpu
                                          + whole.logits_gib_per_gpu)
    assert "logits 55.7 GiB (logits 9.3 + fp32 upcast 18.6 + gradients 27.8)" in whole.describe()


def test_long_examples_without_sequence_parallelism_do_not_fit_an_h100():
    """32K-token examples with one GPU per sequence ran out of memory: the logits alone take 55.7 GiB."""
    plan = sft_memory_plan(QWEN25_32B, NO_SP, gpus_per_node=8, nodes=2)
    with pytest.raises(ConfigError, match=r"does not fit: .*logits 55\.7 GiB.* = 118\.2 GiB per GPU.*"
                                          r"sft\.sequence_parallel_size"):
        check_fits(plan, 80)


def test_the_s1_32b_profile_fits_an_h100():
    sft = load_config(REPO / "params.yaml", "s1-32b").sft
    plan = sft_memory_plan(QWEN25_32B, sft, gpus_per_node=8, nodes=sft.world_size // 8)
    assert sft.block_size == 32768 and sft.sequence_parallel_size > 1
    check_fits(plan, 79.2)  # what torch reports for an 80 GB H100


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
