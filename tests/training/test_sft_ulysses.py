"""DeepSpeed Ulysses (sequence parallelism) through the real SFT entry point: two gloo processes on the CPU
share every sequence, and each step's loss equals the loss without sequence parallelism on the same batch."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.config import ConfigError, SFTConfig, parse_profile
from components.formatting import IGNORE_INDEX, TokenizedExample
from components.training.sft import train_sft
from tests.conftest import REPO


def _examples():
    import random
    rng = random.Random(0)
    out = []
    for n in (13, 22, 9, 17):
        ids = [rng.randint(3, 250) for _ in range(n)]
        out.append(TokenizedExample(ids, [IGNORE_INDEX] * 3 + ids[3:], 3))
    return out


def test_only_attention_and_sampling_that_run_under_ulysses_are_allowed():
    sp = {"world_size": 2, "sequence_parallel_size": 2, "per_device_batch_size": 8, "global_batch_size": 16}
    with pytest.raises(ConfigError, match=r"train_sampling: sorted_steps keeps each step's examples only without"):
        parse_profile({"sft": {**sp, "train_sampling": "sorted_steps"}}, "tiny")
    with pytest.raises(ConfigError, match=r"attn_implementation: 'eager' does not run under DeepSpeed Ulysses"):
        parse_profile({"sft": {**sp, "attn_implementation": "eager"}}, "tiny")
    with pytest.raises(ConfigError, match=r"attn_implementation: packing under DeepSpeed Ulysses needs flash"):
        parse_profile({"sft": {**sp, "packing": True}}, "tiny")
    ok = parse_profile({"sft": {**sp, "packing": True, "attn_implementation": "flash_attention_2"}}, "tiny").sft
    assert ok.packing and ok.sequence_parallel_size == 2  # the combination transformers documents


def run_two_ranks(model_dir, cfg: SFTConfig, tmp_path, examples=None, **options) -> dict | None:
    """``cfg`` trained by two CPU processes (tests/support/ulysses_worker.py) on ``examples`` (default
    ``tmp_path/ex.json``); rank 0's record (summary, loss history), None when ``options`` stopped the run."""
    from components.common.network import free_port
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.ulysses_worker", str(rank), "2", str(port),
                               str(model_dir), str(examples or tmp_path / "ex.json"), cfg.model_dump_json(),
                               str(tmp_path), json.dumps(options)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    record = tmp_path / "rank0.json"
    return json.loads(record.read_text()) if record.exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("attn, packing", [("sdpa", False), ("flash_attention_2", True)])
def test_ulysses_over_gloo_gives_the_loss_without_sequence_parallelism(tiny_model_dir, tmp_path, attn, packing):
    """sp=2 over 2 CPU processes (ZeRO-3, sequences split in halves and all-to-all'd over heads) vs one process
    without SP: the same per-step losses (lr ~0, so every step is a forward on the same weights).
    sdpa without packing; and packing with flash_attention_2 (transformers' own flash dispatch with plain-torch
    kernels, tests/support/cpu_flash.py: the examples of a row are told apart by the gathered position_ids)
    against the sdpa block-diagonal mask without SP."""
    from dataclasses import asdict

    examples = _examples()
    base = dict(block_size=24 if not packing else 32, epochs=1, global_batch_size=1, per_device_batch_size=1,
                learning_rate=1e-9, warmup_ratio=0, packing=packing)
    train_sft(SFTConfig(**base, deepspeed="never"), tiny_model_dir, examples, tmp_path / "ref", tmp_path / "rw")
    ref_steps = json.loads((tmp_path / "rw/loss_history.json").read_text())
    (tmp_path / "ex.json").write_text(json.dumps([asdict(e) for e in examples]))
    cfg = SFTConfig(**base, deepspeed="always", world_size=2, sequence_parallel_size=2, attn_implementation=attn)
    sp = run_two_ranks(tiny_model_dir, cfg, tmp_path)
    assert sp["summary"]["world_size"] == 2 and sp["summary"]["deepspeed"]
    for rank in range(2):  # DeepSpeed's attention wrapper ran, on half of each (24-token) sequence per rank
        shard = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert shard["attention"] == "uattn_wrapper"
        assert shard["shapes"] and all(shape == [1, base["block_size"] // 2] for shape in shard["shapes"])
    sp_losses = [r["loss"] for r in sp["history"]]
    ref_losses = [r["loss"] for r in ref_steps]
    print("ulysses", sp_losses, "reference", ref_losses)
    assert len(sp_losses) == len(ref_losses) == (len(examples) if not packing else 2)  # packing: 2 rows of 2
    assert sp_losses == pytest.approx(ref_losses, abs=1e-5)


@pytest.mark.slow
def test_ulysses_trains_every_epoch_on_a_reshuffled_order(tiny_model_dir, tmp_path):
    """Two epochs under sp=2 (2 CPU processes): 4 examples, a global batch of 2, so 2 optimizer steps an epoch
    and 4 in all, the second epoch's examples in another order than the first's."""
    from dataclasses import asdict

    examples = _examples()
    (tmp_path / "ex.json").write_text(json.dumps([asdict(e) for e in examples]))
    cfg = SFTConfig(block_size=24, epochs=2, global_batch_size=2, per_device_batch_size=1, learning_rate=1e-9,
                    warmup_ratio=0, deepspeed="always", world_size=2, sequence_parallel_size=2,
                    attn_implementation="sdpa")
    sp = run_two_ranks(tiny_model_dir, cfg, tmp_path)
    assert sp["summary"]["steps"] == 4
    losses = [r["loss"] for r in sp["history"]]  # lr ~0: a step's loss is its examples' (the order shows)
    assert losses[:2] != losses[2:]


@pytest.mark.slow
def test_ulysses_resumed_mid_epoch_trains_as_the_run_that_never_stopped(tiny_model_dir, tmp_path):
    """sp=2 over two "nodes" (two CPU processes, local rank 0 each, no shared work directory, ZeRO-3): a run
    stopped after checkpoint-3, a quarter of the way into epoch 0's micro-batches (1 whole batch of each rank's
    loader and 1 of the next 2 Ulysses micro-batches), its work directories deleted and restarted, resumes from the
    bucket and logs the same loss at every later step, and ends with the same weights, as the run that never
    stopped. Bitwise: the same processes, kernels and reduction order on the same batches, from the weights,
    optimizer state and RNG the checkpoint holds exactly (fp32), give the same floats."""
    from dataclasses import asdict

    from safetensors.torch import load_file

    examples = tmp_path / "ex.json"
    examples.write_text(json.dumps([asdict(e) for e in _examples()]))
    cfg = dict(block_size=24, epochs=2, global_batch_size=1, per_device_batch_size=1, learning_rate=3e-3,
               warmup_ratio=0, deepspeed="always", world_size=2, sequence_parallel_size=2,
               attn_implementation="sdpa", save_steps=3)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for d in (whole, stopped):
        d.mkdir()
    ref = run_two_ranks(tiny_model_dir, SFTConfig(**cfg, checkpoint_uri=str(whole / "bucket")), whole, examples,
                        nodes=True)
    resumed_cfg = SFTConfig(**cfg, checkpoint_uri=str(stopped / "bucket"))
    assert run_two_ranks(tiny_model_dir, resumed_cfg, stopped, examples, nodes=True, stop_after=3) is None
    assert (stopped / "bucket/checkpoint-3/COMPLETE").exists() and not (stopped / "model").exists()
    for rank in range(2):  # replacement nodes: nothing local survives
        shutil.rmtree(stopped / f"work{rank}")
    got = run_two_ranks(tiny_model_dir, resumed_cfg, stopped, examples, nodes=True)
    assert Path(got["summary"]["resumed_from"]).name == "checkpoint-3"
    assert got["summary"]["restored_from"] == f"{stopped / 'bucket'}/checkpoint-3"  # no local copy survived
    assert ref["summary"]["steps"] == got["summary"]["steps"] == 8  # 4 examples, 1 a step, 2 epochs
    ref_losses = {r["step"]: r["loss"] for r in ref["history"]}
    got_losses = {r["step"]: r["loss"] for r in got["history"]}
    print("whole", ref_losses, "resumed", got_losses)
    assert sorted(got_losses) == [4, 5, 6, 7, 8]
    assert got_losses == {step: ref_losses[step] for step in got_losses}
    assert len(set(ref_losses.values())) == 8  # every step its own loss: a replayed or skipped batch would show
    ref_weights, got_weights = load_file(whole / "model/model.safetensors"), load_file(stopped / "model/model.safetensors")
    assert ref_weights.keys() == got_weights.keys()
    assert all(torch.equal(ref_weights[k], got_weights[k]) for k in ref_weights)
