"""SFT through the real entry point: plain Trainer and DeepSpeed ZeRO-3 (CPU, one process)."""
import json

import pytest
from transformers import AutoModelForCausalLM

from components.config import PoolConfig, SFTConfig, TeacherConfig
from components.data.pool import generate_pool
from components.distill.teachers import ProgrammaticTeacher
from components.formatting import tokenize_dataset
from components.training.sft import train_sft, training_arguments


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
def test_sft_trains_and_saves_safetensors(tiny_model_dir, examples, tmp_path, deepspeed, monkeypatch):
    """Also: under ZeRO-3 the DeepSpeed config is registered before the model loads, so from_pretrained
    partitions the weights as it creates them (transformers' own is_deepspeed_zero3_enabled, observed inside)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    import components.modeling as modeling
    seen = []

    class Recording:
        @staticmethod
        def from_pretrained(*a, **kw):
            flag = is_deepspeed_zero3_enabled()
            model = AutoModelForCausalLM.from_pretrained(*a, **kw)
            seen.append((flag, all(hasattr(p, "ds_id") and p.numel() == 0 for p in model.parameters())))
            return model
    monkeypatch.setattr(modeling, "AutoModelForCausalLM", Recording)
    cfg = SFTConfig(epochs=1, global_batch_size=8, per_device_batch_size=8, deepspeed=deepspeed,
                    learning_rate=1e-3)
    out = tmp_path / "sft"
    summary = train_sft(cfg, tiny_model_dir, examples, out, tmp_path / "work")
    zero3 = deepspeed == "always"
    assert seen == [(zero3, zero3)]  # ZeRO-3: enabled during from_pretrained, every parameter partitioned (empty)
    assert not is_deepspeed_zero3_enabled()  # and not left on for later loads in this process
    assert summary["deepspeed"] is zero3
    assert summary["steps"] == 2  # that the loss falls far below the untrained one: test_sft_learns.py
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2"
    assert json.loads((tmp_path / "work/loss_history.json").read_text())
    import os

    import torch
    assert "MASTER_PORT" not in os.environ and not torch.distributed.is_initialized()  # nothing leaks


class _Kill(Exception):
    pass


@pytest.fixture
def s3_bucket(monkeypatch):
    """A moto S3 server on 127.0.0.1; credentials and endpoint only through the environment."""
    from tests.support.services import moto_bucket
    with moto_bucket(monkeypatch, "s1flow-ckpt"):
        yield "s3://s1flow-ckpt/sft"


@pytest.mark.parametrize("where,sampling", [("local", "random"), ("s3", "random"), ("local", "sorted_steps")])
def test_killed_training_resumes_from_checkpoint_to_the_same_loss(tiny_model_dir, examples, tmp_path, monkeypatch,
                                                                  where, sampling, request):
    """Uninterrupted vs killed at step 6 (checkpoint at 4) and rerun: same final loss (tol 1e-4).
    s3: the checkpoints are mirrored to S3 and the rerun starts on a clean disk (a new machine).
    sorted_steps (the tiny profile's sampler, here micro-batches of 2): checkpoints every 5 steps, so the run resumes
    from step 5, inside the second epoch, and replays that epoch's batches from there.
    An unmarked checkpoint-6 directory (no COMPLETE) is never resumed from."""
    import shutil

    from transformers import TrainerCallback

    import components.training.sft as sft

    uri = request.getfixturevalue("s3_bucket") if where == "s3" else None
    mid_epoch = sampling == "sorted_steps"
    cfg = SFTConfig(epochs=3, global_batch_size=4, per_device_batch_size=2 if mid_epoch else 4, deepspeed="never",
                    learning_rate=1e-3, checkpoint_uri=uri, train_sampling=sampling, save_steps=5 if mid_epoch else None)
    kept = 5 if mid_epoch else 4  # the checkpoint the killed run leaves
    ref = train_sft(cfg.model_copy(update={"checkpoint_uri": None}), tiny_model_dir, examples, tmp_path / "ref",
                    tmp_path / "ref_work")

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
    if uri:
        from components.training.checkpoints import CheckpointSync
        assert CheckpointSync(uri).complete_steps() == [kept]
        shutil.rmtree(tmp_path / "work")  # only the bucket survives
    (tmp_path / "work/checkpoint-6").mkdir(parents=True)  # unmarked: a save cut short, or a rank's empty mkdir
    resumed = train_sft(cfg, tiny_model_dir, examples, tmp_path / "out", tmp_path / "work")
    assert resumed["resumed_from"].endswith(f"checkpoint-{kept}") and resumed["steps"] == ref["steps"]
    assert resumed["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)


def _with_kill(history, killer):
    """A LossHistory that also raises at the kill step (Trainer takes one callback object per slot)."""
    on_step_end = killer.on_step_end

    def step_end(*a, **kw):
        return on_step_end(*a, **kw)

    history.on_step_end = step_end
    return history


@pytest.mark.slow
def test_two_ray_train_workers_keep_the_global_batch(tiny_model_dir, examples, tmp_path):
    """world_size=2 through Ray Train (gloo on CPU): per-device 4 x 2 workers x accumulation 2 = 16 per step."""
    from dataclasses import asdict

    from components.records import write_jsonl
    from components.training.ray_launcher import train_with_ray
    write_jsonl(tmp_path / "tokens.jsonl", [asdict(e) for e in examples * 2])  # 32 examples
    cfg = SFTConfig(epochs=1, global_batch_size=16, per_device_batch_size=4, world_size=2, launcher="ray",
                    deepspeed="never")
    summary = train_with_ray(cfg, str(tiny_model_dir), tmp_path / "tokens.jsonl", tmp_path / "out", tmp_path / "work")
    assert summary["world_size"] == 2 and summary["steps"] == 2  # 32 examples / 16 per step
    args = json.loads((tmp_path / "out/training_args.json").read_text())
    assert args["gradient_accumulation_steps"] == 2 and args["per_device_train_batch_size"] == 4
    assert (tmp_path / "out/model.safetensors").exists() and not list((tmp_path / "out").glob("*.bin"))


def test_world_size_must_keep_the_global_batch():
    from components.config import ConfigError, parse_profile
    with pytest.raises(ConfigError, match=r"global_batch_size: \(16\) must be a multiple of per_device_batch_size"):
        parse_profile({"sft": {"global_batch_size": 16, "per_device_batch_size": 3, "world_size": 2}}, "tiny")
    with pytest.raises(ConfigError, match=r"sequence_parallel_size: \(3\) must divide world_size"):
        parse_profile({"sft": {"world_size": 16, "per_device_batch_size": 1, "sequence_parallel_size": 3}}, "tiny")
    s1 = parse_profile({"sft": {"world_size": 16, "per_device_batch_size": 1, "global_batch_size": 16,
                                "sequence_parallel_size": 2}}, "tiny").sft
    from components.training.sft import gradient_accumulation
    assert gradient_accumulation(s1, 16) == 2  # 8 data-parallel groups x 1 x 2 = 16


def test_a_new_selection_never_resumes_another_trainings_checkpoints(tiny_model_dir, tmp_path):
    """Checkpoints live under a fingerprint of (SFT params, tokenized data, base model)."""
    import shutil

    from components.config import parse_profile
    from components.paths import Paths
    from components.training.train_stage import sft_fingerprint
    paths = Paths.for_profile("tiny", tmp_path)
    fp = lambda c, p: sft_fingerprint(c.sft, str(p.base_model), p.sft_tokens)  # noqa: E731
    shutil.copytree(tiny_model_dir, paths.base_model)
    paths.sft_tokens.parent.mkdir(parents=True)
    paths.sft_tokens.write_text('{"input_ids": [1, 2], "labels": [1, 2], "prompt_tokens": 0}\n')
    cfg = parse_profile({}, "tiny")
    first = fp(cfg, paths)
    assert fp(cfg, paths) == first
    assert fp(parse_profile({"sft": {"checkpoint_uri": "s3://b/x"}}, "tiny"), paths) == first
    assert fp(parse_profile({"sft": {"learning_rate": 1e-4}}, "tiny"), paths) != first
    paths.sft_tokens.write_text('{"input_ids": [1, 3], "labels": [1, 3], "prompt_tokens": 0}\n')  # another selection
    assert fp(cfg, paths) != first
