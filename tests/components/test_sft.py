"""SFT through the real entry point: plain Trainer and DeepSpeed ZeRO-3 (CPU, one process)."""
import json

import pytest
from transformers import AutoModelForCausalLM

from components.config import SFTConfig, TeacherConfig
from components.formatting import tokenize_dataset
from components.pool import generate_pool
from components.config import PoolConfig
from components.sft import train_sft, training_arguments
from components.teachers import ProgrammaticTeacher


@pytest.fixture(scope="module")
def examples(tiny_engine):
    teacher = ProgrammaticTeacher(TeacherConfig())
    qs = generate_pool(PoolConfig(size=16, max_difficulty=3, malformed_fraction=0))
    rows = [(q.id, q.question, t.thinking, t.answer) for q in qs for t in [teacher.solve(q)]]
    return tokenize_dataset(tiny_engine.tokenizer, rows, block_size=512)[0]


def test_gradient_accumulation_keeps_the_global_batch(tmp_path):
    args = training_arguments(SFTConfig(global_batch_size=16, per_device_batch_size=4, deepspeed="never"),
                              tmp_path, steps_per_epoch=2)
    assert args.gradient_accumulation_steps == 4 and args.per_device_train_batch_size == 4


@pytest.mark.parametrize("deepspeed", ["never", "always"])
def test_sft_trains_and_saves_safetensors(tiny_model_dir, examples, tmp_path, deepspeed):
    cfg = SFTConfig(epochs=1, global_batch_size=8, per_device_batch_size=8, deepspeed=deepspeed,
                    learning_rate=1e-3)
    out = tmp_path / "sft"
    summary = train_sft(cfg, tiny_model_dir, examples, out, tmp_path / "work")
    assert summary["deepspeed"] is (deepspeed == "always")
    assert summary["steps"] == 2 and summary["final_loss"] < 10
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2"
    assert json.loads((tmp_path / "work/loss_history.json").read_text())
    import os

    import torch
    assert "MASTER_PORT" not in os.environ and not torch.distributed.is_initialized()  # nothing leaks


class _Kill(Exception):
    pass


def test_killed_training_resumes_from_checkpoint_to_the_same_loss(tiny_model_dir, examples, tmp_path, monkeypatch):
    """Uninterrupted vs killed at step 6 (checkpoint at 4) and rerun: same final loss (tol 1e-4)."""
    from transformers import TrainerCallback

    import components.sft as sft

    cfg = SFTConfig(epochs=3, global_batch_size=4, per_device_batch_size=4, deepspeed="never", learning_rate=1e-3)
    ref = train_sft(cfg, tiny_model_dir, examples, tmp_path / "ref", tmp_path / "ref_work")

    class KillAtStep6(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 6:
                raise _Kill()

    real_history = sft.LossHistory
    monkeypatch.setattr(sft, "LossHistory", lambda: _with_kill(real_history(), KillAtStep6()))
    with pytest.raises(_Kill):
        train_sft(cfg, tiny_model_dir, examples, tmp_path / "out", tmp_path / "work")
    monkeypatch.setattr(sft, "LossHistory", real_history)
    assert list((tmp_path / "work").glob("checkpoint-*"))
    resumed = train_sft(cfg, tiny_model_dir, examples, tmp_path / "out", tmp_path / "work")
    assert resumed["resumed_from"] and resumed["steps"] == ref["steps"]
    assert resumed["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)


def _with_kill(history, killer):
    """A LossHistory that also raises at the kill step (Trainer takes one callback object per slot)."""
    on_step_end = killer.on_step_end

    def step_end(*a, **kw):
        return on_step_end(*a, **kw)

    history.on_step_end = step_end
    return history
