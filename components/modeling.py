"""Loading a causal LM and its tokenizer from a saved directory or a hub id, ready for batched generation.

    model, tokenizer = load_model("models/tiny/sft", "bfloat16")
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(path: str | Path, dtype: str = "float32", attn_implementation: str | None = None,
               revision: str | None = None):
    """The model (in eval mode, weights in ``dtype``) and its tokenizer, left-padded for batched generation.
    ``revision``: the hub commit of a hub id (a local directory ignores it); never the model's own code."""
    hub = {"revision": revision, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    tokenizer.padding_side = "left"
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], **hub, **extra)
    model.eval()
    return model, tokenizer
