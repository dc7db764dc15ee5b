"""DeepSpeed Ulysses (sequence parallelism) through the real SFT entry point: two gloo processes on the CPU
share every sequence, and each step's loss equals the loss without sequence parallelism on the same batch."""
import json
import subprocess
import sys

import pytest

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


def run_two_ranks(model_dir, cfg: SFTConfig, tmp_path) -> dict:
    """``cfg`` trained by two CPU processes (tests/support/ulysses_worker.py) on ``tmp_path/ex.json``; rank 0's
    record (summary, loss history)."""
    from components.common.network import free_port
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.ulysses_worker", str(rank), "2", str(port),
                               str(model_dir), str(tmp_path / "ex.json"), cfg.model_dump_json(), str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    return json.loads((tmp_path / "rank0.json").read_text())


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
