"""Will this SFT fit? Parameter counts, ZeRO-3 model-state memory and activations, before launch.

Model states come from DeepSpeed's own ZeRO-3 estimator; activations use the
per-layer estimate of Korthikanti et al. (2022) with memory-efficient attention
(no seq² term), keeping only each layer's input when gradient checkpointing is on.

Peak CPU RAM per node while the model loads (``load_cpu_gib_per_node``): sft.py builds
``TrainingArguments`` (which registers the DeepSpeed config) before ``from_pretrained``, so under
ZeRO-3 transformers 5.19 creates the model inside ``deepspeed.zero.Init`` (parameters partitioned
onto the GPUs as they are created) and loads the checkpoint's memory-mapped safetensors into one
gathered layer at a time (``_load_state_dict_into_zero3_model``): the node holds the checkpoint once,
in the page cache its ranks share. Loaded before the config is registered, every rank would first
materialise the whole model in CPU RAM (``load_cpu_gib_per_node_unsharded``: ranks x model + the
page cache), which sft.py's order avoids.

    plan = sft_memory_plan(model_config, cfg.sft, gpus_per_node=8, nodes=2); check_fits(plan, 80)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from components.config import ConfigError, SFTConfig

GIB = 1024 ** 3


def param_counts(c) -> tuple[int, int]:
    """(total, largest single layer) for a Qwen2/Llama-style decoder config."""
    h, inter, layers, vocab = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    head_dim = getattr(c, "head_dim", None) or h // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attn = h * h + 2 * h * kv + h * h + (h + 2 * kv)  # q, k, v, o (+ qkv biases, as Qwen2 has)
    per_layer = attn + 3 * h * inter + 2 * h
    embed = vocab * h
    head = 0 if getattr(c, "tie_word_embeddings", False) else vocab * h
    return embed + head + layers * per_layer + h, max(embed, per_layer)


def activation_bytes(c, seq_len: int, micro_batch: int, checkpointing: bool, dtype_bytes: int = 2) -> int:
    per_layer_full = seq_len * micro_batch * c.hidden_size * 34 * dtype_bytes // 2
    if checkpointing:  # saved layer inputs + one layer recomputed at a time
        return c.num_hidden_layers * seq_len * micro_batch * c.hidden_size * dtype_bytes + per_layer_full
    return c.num_hidden_layers * per_layer_full


@dataclass
class MemoryPlan:
    total_params: int
    largest_layer_params: int
    gpus: int
    cpu_offload: bool
    model_states_gib_per_gpu: float
    cpu_gib_per_node: float
    activations_gib_per_gpu: float
    load_cpu_gib_per_node: float = 0.0
    load_cpu_gib_per_node_unsharded: float = 0.0

    @property
    def gpu_gib(self) -> float:
        return self.model_states_gib_per_gpu + self.activations_gib_per_gpu

    def describe(self) -> str:
        size = f"{self.total_params / 1e9:.2f}B" if self.total_params >= 1e8 else f"{self.total_params / 1e6:.2f}M"
        return (f"{size} params on {self.gpus} GPU(s), ZeRO-3"
                f"{' + CPU offload' if self.cpu_offload else ''}: model states {self.model_states_gib_per_gpu:.1f} GiB"
                f" + activations {self.activations_gib_per_gpu:.1f} GiB = {self.gpu_gib:.1f} GiB per GPU; "
                f"CPU {self.cpu_gib_per_node:.1f} GiB per node; peak CPU RAM at load "
                f"{self.load_cpu_gib_per_node:.1f} GiB per node (sharded as it loads; "
                f"{self.load_cpu_gib_per_node_unsharded:.1f} GiB if every rank loaded it whole)")


def sft_memory_plan(model_config, sft: SFTConfig, gpus_per_node: int, nodes: int = 1,
                    cpu_offload: bool = False) -> MemoryPlan:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    total, largest = param_counts(model_config)
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        total, largest, num_gpus_per_node=gpus_per_node, num_nodes=nodes, cpu_offload=cpu_offload,
        cpu_offload_params=cpu_offload, zero_init=True)
    # Ulysses splits every sequence over sequence_parallel_size GPUs: each holds 1/sp of the activations
    act = activation_bytes(model_config, sft.block_size, sft.per_device_batch_size, sft.gradient_checkpointing,
                           2 if sft.bf16 else 4) / sft.sequence_parallel_size
    weights = total * (2 if sft.bf16 else 4)  # the checkpoint as loaded, in the training dtype
    return MemoryPlan(total, largest, gpus_per_node * nodes, cpu_offload, gpu / GIB, cpu / GIB, act / GIB,
                      load_cpu_gib_per_node=weights / GIB,
                      load_cpu_gib_per_node_unsharded=(gpus_per_node + 1) * weights / GIB)


def check_fits(plan: MemoryPlan, gpu_gib: float) -> None:
    if plan.gpu_gib > gpu_gib:
        raise ConfigError(
            f"sft: does not fit: {plan.describe()} > {gpu_gib:.0f} GiB available. Turn on "
            "sft.gradient_checkpointing, lower sft.per_device_batch_size or sft.block_size, add GPUs "
            "(sft.world_size), or offload to CPU (infra/deepspeed/zero3_offload.json)")


def plan_dict(plan: MemoryPlan) -> dict:
    return {**asdict(plan), "gpu_gib": round(plan.gpu_gib, 2)}
