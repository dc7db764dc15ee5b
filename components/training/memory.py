"""Will this SFT fit? Parameter counts, ZeRO-3 model-state memory, activations and logits, before launch.

Model states come from DeepSpeed's own ZeRO-3 estimator; activations use the
per-layer estimate of Korthikanti et al. (2022) with memory-efficient attention
(no seq² term), keeping only each layer's input when gradient checkpointing is on.

Logits (``logits_bytes``): the sequence x vocabulary tensors of the loss, which no layer estimate
holds and which dominate at long sequences (Qwen2.5's vocabulary is 152,064). transformers 5.19's
``ForCausalLMLoss`` upcasts the logits to fp32 before the cross-entropy, so one micro-batch holds
the logits in the training dtype, their fp32 upcast (the log-softmax output, fp32, in backward) and
the gradients of both: 2 + 4 + 4 + 2 = 12 bytes per logit in bf16. At 32,768 tokens that is 9.3 +
18.6 + 27.8 = 55.7 GiB on one GPU. Ulysses gives each GPU 1/sequence_parallel_size of the sequence,
so its logits too.

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

from dataclasses import asdict, dataclass, field

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


def logits_bytes(c, seq_len: int, micro_batch: int, dtype_bytes: int = 2) -> dict[str, int]:
    """The loss's sequence x vocabulary tensors for one micro-batch on one GPU, by kind: the logits in the
    training dtype, their fp32 upcast, and the gradients of both (in fp32 training ``.float()`` returns the
    same tensor, and the fp32 tensor the backward pass adds is the log-softmax's gradient)."""
    n = seq_len * micro_batch * c.vocab_size
    return {"logits": dtype_bytes * n, "fp32_upcast": 4 * n if dtype_bytes < 4 else 0,
            "gradients": (dtype_bytes + 4) * n}


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
    logits_gib_per_gpu: float = 0.0
    logits_detail_gib: dict = field(default_factory=dict)

    @property
    def gpu_gib(self) -> float:
        return self.model_states_gib_per_gpu + self.activations_gib_per_gpu + self.logits_gib_per_gpu

    def _logits_parts(self) -> str:
        d = self.logits_detail_gib
        return " + ".join(f"{k.replace('_', ' ')} {d[k]:.1f}" for k in ("logits", "fp32_upcast", "gradients")
                          if d.get(k))

    def describe(self) -> str:
        size = f"{self.total_params / 1e9:.2f}B" if self.total_params >= 1e8 else f"{self.total_params / 1e6:.2f}M"
        return (f"{size} params on {self.gpus} GPU(s), ZeRO-3"
                f"{' + CPU offload' if self.cpu_offload else ''}: model states {self.model_states_gib_per_gpu:.1f} GiB"
                f" + activations {self.activations_gib_per_gpu:.1f} GiB + logits {self.logits_gib_per_gpu:.1f} GiB"
                f" ({self._logits_parts()}) = {self.gpu_gib:.1f} GiB per GPU; "
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
    # Ulysses splits every sequence over sequence_parallel_size GPUs: each holds 1/sp of the activations and logits
    dtype_bytes = 2 if sft.bf16 else 4
    act = activation_bytes(model_config, sft.block_size, sft.per_device_batch_size, sft.gradient_checkpointing,
                           dtype_bytes) / sft.sequence_parallel_size
    logits = {k: v / sft.sequence_parallel_size / GIB for k, v in
              logits_bytes(model_config, sft.block_size, sft.per_device_batch_size, dtype_bytes).items()}
    weights = total * (2 if sft.bf16 else 4)  # the checkpoint as loaded, in the training dtype
    return MemoryPlan(total, largest, gpus_per_node * nodes, cpu_offload, gpu / GIB, cpu / GIB, act / GIB,
                      load_cpu_gib_per_node=weights / GIB,
                      load_cpu_gib_per_node_unsharded=(gpus_per_node + 1) * weights / GIB,
                      logits_gib_per_gpu=sum(logits.values()), logits_detail_gib=logits)


def check_fits(plan: MemoryPlan, gpu_gib: float) -> None:
    if plan.gpu_gib > gpu_gib:
        raise ConfigError(
            f"sft: does not fit: {plan.describe()} > {gpu_gib:.0f} GiB available. Raise "
            "sft.sequence_parallel_size (Ulysses splits activations and logits over that many GPUs), turn on "
            "sft.gradient_checkpointing, lower sft.per_device_batch_size or sft.block_size, add GPUs "
            "(sft.world_size), or offload to CPU (infra/deepspeed/zero3_offload.json)")


def plan_dict(plan: MemoryPlan) -> dict:
    return {**asdict(plan), "gpu_gib": round(plan.gpu_gib, 2)}
