"""The grouped-query SDPA the HF engine runs on a CPU gives transformers' ``sdpa`` numbers exactly."""
import copy

import pytest
import torch

from components.config import ModelConfig
from components.data.base_model import build_model
from components.inference.attention import NAME, use_grouped_sdpa
from components.inference.engine import Sampling
from components.inference.hf_engine import HFEngine
from components.modeling import load_model

PROMPTS = ["<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nWhat is the sum of the digits of 4096?<|im_end|>\n<|im_start|>assistant\n",
           "Problem: 7 * 8\n"]


def _pair(model):
    """(the model on transformers' sdpa, a copy switched to the grouped implementation)."""
    grouped = copy.deepcopy(model)
    assert use_grouped_sdpa(grouped) and grouped.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"
    return model.eval(), grouped.eval()


@pytest.mark.parametrize("heads", [(6, 2), (4, 1), (4, 4)])
def test_logits_and_greedy_tokens_equal_sdpa(tiny_model_dir, heads):
    _, tok = load_model(tiny_model_dir)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=96, num_layers=2, num_heads=heads[0], num_kv_heads=heads[1],
                                    intermediate_size=128, max_position_embeddings=512),
                        len(tok), tok.pad_token_id, tok.eos_token_id)
    ref, grouped = _pair(model)
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)  # left-padded: a real mask
    assert not bool(enc["attention_mask"].all())
    with torch.inference_mode():
        assert torch.equal(ref(**enc).logits, grouped(**enc).logits)
        kw = dict(max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
        assert torch.equal(ref.generate(**enc, **kw), grouped.generate(**enc, **kw))


def test_training_forward_and_gradients_equal_sdpa(tiny_model_dir):
    """Right-padded, as in SFT: the same loss and gradients (the engine's switch never leaks into training
    numbers, should a trained model be the engine's)."""
    model, tok = load_model(tiny_model_dir)
    ref, grouped = _pair(model)
    ids = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    losses = []
    for m in (ref, grouped):
        m.train()
        m.zero_grad()
        loss = m(**ids, labels=ids["input_ids"]).loss
        loss.backward()
        losses.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.equal(losses[0][0], losses[1][0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(losses[0][1], losses[1][1]))


def test_engine_switches_on_cpu_and_generates_as_before(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    reference = copy.deepcopy(model).eval()
    engine = HFEngine(model, tok, batch_size=4)
    assert engine.model.config._attn_implementation == NAME
    out = engine.generate(PROMPTS, Sampling(max_new_tokens=24))
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        ids = reference.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=engine.vocab.end_id)
    for row, c in enumerate(out):
        gen = ids[row, enc["input_ids"].shape[1]:].tolist()
        assert c.token_ids == gen[:len(c.token_ids)]


def test_eager_models_are_left_alone(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, attn_implementation="eager")
    assert not use_grouped_sdpa(model) and model.config._attn_implementation == "eager"
