"""Loading a saved causal LM and its tokenizer for batched generation."""
import pytest
import torch

from components.modeling import load_model


@pytest.mark.parametrize("dtype,torch_dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_a_saved_model_loads_in_eval_mode_left_padded(tiny_model_dir, dtype, torch_dtype):
    model, tokenizer = load_model(tiny_model_dir, dtype)
    assert not model.training and next(model.parameters()).dtype == torch_dtype
    assert tokenizer.padding_side == "left"
