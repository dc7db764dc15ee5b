"""A checkpoint is loaded as data only: keys stay inside it, and DeepSpeed unpickles its shards as weights."""
import pickle

import pytest
import torch


class _Payload:
    """What a stranger's shard can hold: unpickling it calls ``open(path, "w")``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_deepspeed_loads_zero_shards_as_weights_only(tmp_path):
    """DeepSpeed's own loader runs a shard's code; inside deepspeed_weights_only it refuses it, and still loads
    what a ZeRO-3 optimizer shard holds (tensors, ZeroStageEnum, the loss scaler)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from components.training.checkpoint_trust import deepspeed_weights_only
    evil, ran = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"optimizer_state_dict": _Payload(ran)}, evil)
    shard = tmp_path / "optim_states.pt"
    torch.save({"optimizer_state_dict": {"zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(1.0),
                                         "fp32_flat_groups": [torch.ones(3)]}, "ds_version": "0.19.8"}, shard)
    engine = TorchCheckpointEngine()
    with deepspeed_weights_only():
        with pytest.raises(pickle.UnpicklingError, match="Unsupported global: GLOBAL io.open"):
            engine.load(str(evil), map_location="cpu")
        assert not ran.exists()
        state = engine.load(str(shard), map_location="cpu")["optimizer_state_dict"]
    assert state["zero_stage"] is ZeroStageEnum.weights and state["loss_scaler"].cur_scale == 1.0
    assert torch.equal(state["fp32_flat_groups"][0], torch.ones(3))
    engine.load(str(evil), map_location="cpu")  # outside it, DeepSpeed's own behaviour: the shard's code runs
    assert ran.exists()


def test_safe_keys_stay_inside_the_checkpoint(tmp_path):
    from components.training.checkpoint_trust import CheckpointRefused, inside, safe_key
    for key in ("model.safetensors", "global_step8/zero_pp_rank_0_mp_rank_00_model_states.pt", "..data", "a..b"):
        assert safe_key(key, "m") == key
    for key in ("..", "../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a\\..\\b", "C:/x", None):
        with pytest.raises(CheckpointRefused):
            safe_key(key, "m")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(CheckpointRefused, match="resolves outside"):
        inside(tmp_path / "root", "link/evil", "m")


