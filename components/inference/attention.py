"""SDPA for CPU generation without copying the KV cache once per query head.

transformers' ``sdpa`` attention lets the kernel handle grouped-query attention
(``enable_gqa``) only without an attention mask; with one (every left-padded
batch) it first repeats each key/value head for its query heads, a copy of the
whole KV cache per layer per decoding step (a fifth of the tiny model's
generation time on a CPU). PyTorch's CPU kernels take the mask and the grouped
heads together and give the same numbers (``tests/inference/test_attention.py``),
so the HF engine switches a model on a CPU to this implementation. On CUDA a
masked grouped call falls back to the math kernel: models there keep ``sdpa``.

    use_grouped_sdpa(model)
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "s1flow_grouped_sdpa"


def grouped_sdpa_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' sdpa attention with ``enable_gqa`` also under a mask; anything else is left to it."""
    if query.shape[1] == key.shape[1] or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_length:  # prefill into an empty static cache, as transformers crops it
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal,
        enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    AttentionInterface.register(NAME, grouped_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_grouped_sdpa(model) -> bool:
    """Switch a CPU model running transformers' ``sdpa`` to :data:`NAME`; whether it was switched."""
    if model.device.type != "cpu" or model.config._attn_implementation != "sdpa":
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
