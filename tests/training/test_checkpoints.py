"""Checkpoints with two real processes (gloo): one writer per file, and a run killed mid-upload restores the
last complete checkpoint, from the same disk or from S3 on a fresh one."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from components.common.network import free_port
from tests.conftest import REPO

STEPS = (2, 4)
KILL_STEP = 4  # rank 1 dies after its first upload of this step


def _files(rank: int, step: int) -> dict[str, str]:
    """What each rank writes into checkpoint-<step>, the way HF + DeepSpeed ZeRO-3 name them."""
    shard = f"global_step{step}/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
    own = {shard: f"optim {rank} {step}", f"global_step{step}/bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt":
           f"bf16 {rank} {step}", f"rng_state_{rank}.pth": f"rng {rank} {step}"}
    if rank == 0:
        own.update({"model.safetensors": f"model {step}" * 50, "trainer_state.json": json.dumps({"step": step}),
                    "latest": f"global_step{step}"})
    return own


def worker(phase: str, rank: int, world: int, port: int, work_dir: str, uri: str, out: str) -> None:
    """One training process (run as a child): save steps 2 and 4, or restore."""
    from datetime import timedelta

    import torch.distributed as dist

    from components.training.checkpoints import CheckpointSync, barrier, resume_checkpoint
    os.environ["LOCAL_RANK"] = str(rank)  # one node, one shared disk
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    work, sync, report = Path(work_dir), CheckpointSync(uri), {"puts": {}}
    if phase == "restore":
        report["resume"] = resume_checkpoint(work, sync)
        Path(out).write_text(json.dumps(report))
        return
    put_file = sync.fs.put_file

    def recording_put(src, dst, **kw):
        if step == KILL_STEP and rank == 1 and report["puts"].get(str(step)):
            os._exit(9)  # SIGKILL-like: mid-upload, no cleanup, no barrier
        put_file(src, dst, **kw)
        report["puts"].setdefault(str(step), []).append(dst.split(f"checkpoint-{step}/", 1)[1])
        Path(out).write_text(json.dumps(report))
    sync.fs.put_file = recording_put
    for step in STEPS:
        for rel, text in _files(rank, step).items():
            (work / f"checkpoint-{step}" / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / f"checkpoint-{step}" / rel).write_text(text)
        barrier()  # the Trainer's save is collective
        sync.on_save(SimpleNamespace(output_dir=str(work)), SimpleNamespace(global_step=step), None)
    Path(out).write_text(json.dumps(report))


def _run(phase: str, work: Path, uri: str, tmp: Path) -> list[tuple[int, dict]]:
    port = free_port()
    procs = []
    for rank in range(2):
        out = tmp / f"{phase}-{work.name}-{rank}.json"
        code = (f"from tests.training.test_checkpoints import worker; "
                f"worker({phase!r}, {rank}, 2, {port}, {str(work)!r}, {uri!r}, {str(out)!r})")
        procs.append((subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE, text=True,
                                       env={**os.environ, "PYTHONPATH": str(REPO)}), out))
    deadline = time.monotonic() + 180
    while any(p.poll() is None for p, _ in procs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p, _ in procs):  # like torchrun: one worker died, stop the rest
            time.sleep(1)
            for p, _ in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.1)
    results = []
    for proc, out in procs:
        _, err = proc.communicate(timeout=30)
        results.append((proc.returncode, json.loads(out.read_text()) if out.exists() else {}, err[-2000:]))
    return results


@pytest.fixture
def bucket(monkeypatch):
    from tests.support.services import moto_bucket
    with moto_bucket(monkeypatch, "s1flow-ranks"):
        yield "s3://s1flow-ranks/sft"


def test_one_writer_per_file_and_a_kill_mid_upload_restores_the_last_complete_checkpoint(bucket, tmp_path):
    from components.training.checkpoints import MARKER, CheckpointSync
    work = tmp_path / "node"
    (rank0, saved0, err0), (rank1, saved1, _) = _run("save", work, bucket, tmp_path)
    assert rank1 == 9 and rank0 != 0, err0  # rank 1 killed mid-upload of step 4, then rank 0 is stopped
    puts0, puts1 = set(saved0["puts"]["2"]), set(saved1["puts"]["2"])
    assert not puts0 & puts1  # never two writers of one key
    assert puts0 | puts1 == set(_files(0, 2)) | set(_files(1, 2))
    assert puts1 == set(_files(1, 2))  # rank 1 uploads exactly its own shards and RNG state
    sync = CheckpointSync(bucket)
    assert sync.complete_steps() == [2]  # checkpoint-4 is half uploaded and unmarked
    assert sync.fs.exists(f"{sync.root}/checkpoint-4") and not sync.fs.exists(f"{sync.root}/checkpoint-4/{MARKER}")
    manifest = json.loads(sync.fs.cat(f"{sync.root}/checkpoint-2/{MARKER}"))["files"]
    assert set(manifest) == puts0 | puts1
    assert (work / "checkpoint-2" / MARKER).exists() and not (work / "checkpoint-4" / MARKER).exists()

    # same disk: the unmarked local checkpoint-4 (all files written, upload cut short) is not resumed
    same = _run("restore", work, bucket, tmp_path)
    assert [r[0] for r in same] == [0, 0], same[0][2]
    assert {r[1]["resume"] for r in same} == {str(work / "checkpoint-2")}
    assert not (work / "checkpoint-4").exists()

    # a fresh machine: only the bucket survives, plus an empty checkpoint-6 another rank just created
    fresh = tmp_path / "fresh"
    (fresh / "checkpoint-6").mkdir(parents=True)
    restored = _run("restore", fresh, bucket, tmp_path)
    assert [r[0] for r in restored] == [0, 0], restored[0][2]
    assert {r[1]["resume"] for r in restored} == {str(fresh / "checkpoint-2")}
    for rel in manifest:
        assert (fresh / "checkpoint-2" / rel).read_text() == (work / "checkpoint-2" / rel).read_text()
    assert (fresh / "checkpoint-2" / MARKER).exists() and not (fresh / "checkpoint-6").exists()
    assert not [p for p in fresh.iterdir() if p.name.startswith(".restore-")]


def test_owner_rank_of_checkpoint_files():
    from components.training.checkpoints import owner_rank
    assert owner_rank("global_step8/zero_pp_rank_3_mp_rank_00_optim_states.pt") == 3
    assert owner_rank("global_step8/bf16_zero_pp_rank_12_mp_rank_00_optim_states.pt") == 12
    assert owner_rank("rng_state_5.pth") == 5
    assert {owner_rank(f) for f in ("model.safetensors", "rng_state.pth", "trainer_state.json", "optimizer.pt",
                                    "scheduler.pt", "latest", "global_step8/mp_rank_00_model_states.pt")} == {0}
