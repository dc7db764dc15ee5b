"""flash-attn's two entry points in plain torch, for transformers' own flash-attention dispatch on a CPU.

``cpu_flash_attention(model)`` switches a loaded model to ``flash_attention_2`` and makes
transformers' ``_lazy_imports`` return these kernels, so everything else is transformers' real
code path (``integrations.flash_attention`` -> ``_flash_attention_forward``): the choice between
varlen kwargs, packed ``position_ids`` (``_is_packed_sequence``: batch size 1 only) and the
plain kernel, and ``flash_attention_mask``. Only the kernels are replaced: causal attention over
``[batch, seq, heads, dim]`` and the varlen form over ``cu_seqlens`` segments.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def _attend(q, k, v, causal, softmax_scale):  # [seq, heads, dim] each
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         is_causal=causal, scale=softmax_scale)
    return out.transpose(0, 1)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
    return torch.stack([_attend(q[i], k[i], v[i], causal, softmax_scale) for i in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
                           softmax_scale=None, causal=False, **_):
    cu = [int(x) for x in cu_seqlens_q]
    assert cu == [int(x) for x in cu_seqlens_k]
    return torch.cat([_attend(q[a:b], k[a:b], v[a:b], causal, softmax_scale) for a, b in zip(cu, cu[1:])])


@contextmanager
def cpu_flash_attention(model):
    import transformers.modeling_flash_attention_utils as fa
    from transformers.modeling_flash_attention_utils import _pad_input, _unpad_input

    saved = (fa._lazy_imports, fa._loaded_implementation, model.config._attn_implementation)
    fa._lazy_imports = lambda *a, **k: (flash_attn_func, flash_attn_varlen_func, None, _pad_input, _unpad_input)
    fa._loaded_implementation = None  # reload through the patched import
    model.config._attn_implementation = "flash_attention_2"
    try:
        yield model
    finally:
        fa._lazy_imports, model.config._attn_implementation = saved[0], saved[2]
        fa._loaded_implementation = None
