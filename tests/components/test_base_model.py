import pytest
import torch

from components.config import ModelConfig, PretrainConfig
from components.data.base_model import _packed_blocks, build_model, pretrain

MODEL = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
CFG = PretrainConfig(steps=6, batch_size=2, block_size=16, warmup_steps=1)


def _blocks():
    g = torch.Generator().manual_seed(0)
    return _packed_blocks([torch.randint(3, 100, (40,), generator=g).tolist() for _ in range(10)], 16, 0)


def test_pretraining_resumes_to_the_same_result(tmp_path):
    ckpt = tmp_path / "pretrain.ckpt"
    ref_model = build_model(MODEL, 100, 0, 2)
    ref = pretrain(ref_model, _blocks(), CFG)

    model = build_model(MODEL, 100, 0, 2)
    calls = {"n": 0}
    original = model.forward

    def dying_forward(*a, **kw):  # the process "dies" during step 5
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*a, **kw)

    model.forward = dying_forward
    with pytest.raises(KeyboardInterrupt):
        pretrain(model, _blocks(), CFG, checkpoint=ckpt, checkpoint_every=2)
    assert ckpt.exists()

    resumed_model = build_model(MODEL, 100, 0, 2)
    resumed = pretrain(resumed_model, _blocks(), CFG, checkpoint=ckpt, checkpoint_every=2)
    assert resumed == pytest.approx(ref, rel=1e-5)
    for a, b in zip(ref_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b)


def test_checkpoint_from_other_settings_is_ignored(tmp_path):
    ckpt = tmp_path / "pretrain.ckpt"
    pretrain(build_model(MODEL, 100, 0, 2), _blocks(), CFG.model_copy(update={"steps": 5}), ckpt, 2)
    losses = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), CFG, ckpt, 2)
    assert len(losses) == CFG.steps
