"""Checkpoints with two real processes (gloo): one writer per file, and a run killed mid-upload restores the
last complete checkpoint, from the same disk or from S3 on a fresh one; a checkpoint counts as complete only
where it holds every file a resume of all ranks needs (trainer_state.json, DeepSpeed's latest and every rank's
shards and RNG state)."""
import hashlib
import json
import os
import re
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
    """What each rank writes into checkpoint-<step>, the way transformers 5.19 + DeepSpeed 0.19.8 ZeRO-3 (bf16)
    name them: every rank its model and optimizer shards and its RNG state; global rank 0 alone the model,
    trainer_state.json and DeepSpeed's latest."""
    tag = f"global_step{step}"
    own = {f"{tag}/zero_pp_rank_{rank}_mp_rank_00_model_states.pt": f"model states {rank} {step}",
           f"{tag}/bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt": f"bf16 {rank} {step}",
           f"rng_state_{rank}.pth": f"rng {rank} {step}"}
    if rank == 0:
        own.update({"model.safetensors": f"model {step}" * 50, "trainer_state.json": json.dumps({"step": step}),
                    "latest": tag})
    return own


def worker(phase: str, rank: int, world: int, port: int, work_dir: str, uri: str, out: str,
           nodes: bool = False) -> None:
    """One training process (run as a child): save steps 2 and 4 (phase save: rank 1 dies uploading step 4;
    save_whole: no kill), or restore. ``nodes``: each rank on its own node with its own disk (work_dir/node<R>)."""
    from datetime import timedelta

    import torch.distributed as dist

    from components.training.checkpoints import CheckpointSync, barrier, resume_checkpoint
    os.environ["LOCAL_RANK"] = "0" if nodes else str(rank)  # one node per rank, or one node sharing one disk
    if nodes:
        work_dir = str(Path(work_dir) / f"node{rank}")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    work, sync, report = Path(work_dir), CheckpointSync(uri), {"puts": {}}
    if phase == "restore":
        report["resume"] = resume_checkpoint(work, sync)
        Path(out).write_text(json.dumps(report))
        return
    put_file = sync.fs.put_file

    def recording_put(src, dst, **kw):
        if phase == "save" and step == KILL_STEP and rank == 1 and report["puts"].get(str(step)):
            os._exit(9)  # SIGKILL-like: mid-upload, no cleanup, no barrier
        put_file(src, dst, **kw)
        report["puts"].setdefault(str(step), []).append(dst.split(f"checkpoint-{step}/", 1)[1])
        Path(out).write_text(json.dumps(report))
    sync.fs.put_file = recording_put
    for step in STEPS:
        args, state = SimpleNamespace(output_dir=str(work)), SimpleNamespace(global_step=step)
        sync.on_step_end(args, state, SimpleNamespace(should_save=True))  # as the Trainer does before it saves
        for rel, text in _files(rank, step).items():
            (work / f"checkpoint-{step}" / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / f"checkpoint-{step}" / rel).write_text(text)
        barrier()  # the Trainer's save is collective
        sync.on_save(args, state, None)
    Path(out).write_text(json.dumps(report))


def _run(phase: str, work: Path, uri: str, tmp: Path, nodes: bool = False) -> list[tuple[int, dict]]:
    port = free_port()
    procs = []
    for rank in range(2):
        out = tmp / f"{phase}-{work.name}-{rank}.json"
        code = (f"from tests.training.test_checkpoints import worker; "
                f"worker({phase!r}, {rank}, 2, {port}, {str(work)!r}, {uri!r}, {str(out)!r}, {nodes!r})")
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
    for rel, entry in manifest.items():  # each rank hashed its own files; rank 0 gathered them into the manifest
        data = (work / "checkpoint-2" / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
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


def test_missing_for_resume_names_what_each_rank_needs():
    from components.training.checkpoints import missing_for_resume
    whole = {**_files(0, 8), **_files(1, 8)}
    assert missing_for_resume(whole, 2, "global_step8") == []
    assert missing_for_resume(_files(1, 8), 2, None) == ["trainer_state.json", "rng_state_0.pth", "latest"]
    assert missing_for_resume(_files(0, 8), 2, "global_step8") == [
        "rng_state_1.pth", "global_step8/zero_pp_rank_1_mp_rank_00_model_states.pt",
        "global_step8/zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert missing_for_resume(whole, 3, "global_step8")  # a third rank has nothing to load
    plain = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]
    assert missing_for_resume(plain, 1) == []  # the Trainer without DeepSpeed
    assert missing_for_resume(plain[1:], 1) == ["model.safetensors"]


def _put(sync, step: int, files: dict[str, str], marked: bool) -> None:
    """A checkpoint in the bucket; ``marked``: with a COMPLETE whose manifest lists what is there."""
    from components.training.checkpoints import MARKER
    root = f"{sync.root}/checkpoint-{step}"
    for rel, text in files.items():
        sync.fs.pipe(f"{root}/{rel}", text.encode())
    if marked:
        manifest = {rel: {"size": len(text.encode()), "sha256": hashlib.sha256(text.encode()).hexdigest()}
                    for rel, text in files.items()}
        sync.fs.pipe(f"{root}/{MARKER}", json.dumps({"step": step, "files": manifest}).encode())


def test_a_marked_but_partial_checkpoint_in_the_bucket_is_skipped_for_the_last_whole_one(bucket, tmp_path,
                                                                                         monkeypatch, caplog):
    """checkpoint-100 whole, checkpoint-150 marked COMPLETE but holding only rank 1's files (no trainer_state.json,
    no DeepSpeed latest, no rank 0 shards): a fresh node resumes from 100, with a warning naming what 150 lacks."""
    from components.training.checkpoints import CheckpointSync, resume_checkpoint
    monkeypatch.setenv("WORLD_SIZE", "2")
    sync = CheckpointSync(bucket)
    _put(sync, 100, {**_files(0, 100), **_files(1, 100)}, marked=True)
    _put(sync, 150, _files(1, 150), marked=True)
    assert sync.complete_steps() == [100, 150]
    with caplog.at_level("WARNING", logger="components.training.checkpoints"):
        resume = resume_checkpoint(tmp_path / "node2", sync)
    assert resume == str(tmp_path / "node2" / "checkpoint-100")
    assert "checkpoint-150" in caplog.text and "trainer_state.json" in caplog.text and "latest" in caplog.text
    assert not (tmp_path / "node2" / "checkpoint-150").exists()
    assert sorted(p.relative_to(tmp_path / "node2/checkpoint-100").as_posix()
                  for p in (tmp_path / "node2/checkpoint-100").rglob("*") if p.is_file() and p.name != "COMPLETE") \
        == sorted({**_files(0, 100), **_files(1, 100)})


def test_a_stale_marked_local_share_of_another_nodes_checkpoint_is_not_resumed(bucket, tmp_path, monkeypatch):
    """A node holding only its ranks' files of checkpoint-150 under a COMPLETE marker (no trainer_state.json, no
    latest: global rank 0 wrote them on another node) drops it and resumes from the bucket's whole copy."""
    from components.training.checkpoints import MARKER, CheckpointSync, resume_checkpoint
    monkeypatch.setenv("WORLD_SIZE", "2")
    sync = CheckpointSync(bucket)
    _put(sync, 150, {**_files(0, 150), **_files(1, 150)}, marked=True)
    share = tmp_path / "node2" / "checkpoint-150"
    for rel, text in _files(1, 150).items():
        (share / rel).parent.mkdir(parents=True, exist_ok=True)
        (share / rel).write_text(text)
    (share / MARKER).write_text(json.dumps({"step": 150}))
    assert resume_checkpoint(tmp_path / "node2", sync) == str(share)
    assert (share / "trainer_state.json").exists() and (share / "latest").read_text() == "global_step150"


def test_ranks_on_separate_disks_mark_only_the_bucket_and_resume_from_it(bucket, tmp_path):
    """Two nodes, no shared disk: neither node's directory holds the whole checkpoint, so neither is marked;
    the bucket's copy is, and both nodes restore it."""
    from components.training.checkpoints import MARKER, CheckpointSync
    work = tmp_path / "cluster"
    saved = _run("save_whole", work, bucket, tmp_path, nodes=True)
    assert [r[0] for r in saved] == [0, 0], saved[0][2]
    assert CheckpointSync(bucket).complete_steps() == [2, 4]
    for node in ("node0", "node1"):
        assert (work / node / "checkpoint-4").is_dir() and not (work / node / "checkpoint-4" / MARKER).exists()
    restored = _run("restore", work, bucket, tmp_path, nodes=True)
    assert [r[0] for r in restored] == [0, 0], restored[0][2]
    assert [r[1]["resume"] for r in restored] == [str(work / "node0/checkpoint-4"), str(work / "node1/checkpoint-4")]
    for node in ("node0", "node1"):
        assert (work / node / "checkpoint-4/trainer_state.json").exists()
        assert (work / node / "checkpoint-4/global_step4/zero_pp_rank_1_mp_rank_00_model_states.pt").exists()


def test_a_step_saved_again_is_unmarked_in_the_bucket_until_all_its_files_are_uploaded_again(bucket, tmp_path):
    """A run restarted from checkpoint-2 while the bucket holds a marked checkpoint-4 saves step 4 again: the old
    marker goes before the first file is overwritten, so a run lost mid-upload leaves step 4 unmarked, never a
    marked mix of two saves."""
    from components.training.checkpoints import CheckpointSync
    sync = CheckpointSync(bucket)
    _put(sync, 4, _files(0, 4), marked=True)
    assert sync.complete_steps() == [4]
    work = tmp_path / "work"
    for rel, text in _files(0, 4).items():
        (work / "checkpoint-4" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "checkpoint-4" / rel).write_text(f"again: {text}")
    put_file, puts = sync.fs.put_file, []

    def lost_after_one(src, dst, **kw):
        if puts:
            raise RuntimeError("the node is gone")
        put_file(src, dst, **kw)
        puts.append(dst)
    sync.fs.put_file = lost_after_one
    with pytest.raises(RuntimeError, match="the node is gone"):
        sync.on_save(SimpleNamespace(output_dir=str(work)), SimpleNamespace(global_step=4), None)
    assert len(puts) == 1 and sync.complete_steps() == []


def _tamper(sync, step: int, rel: str) -> None:
    """The same number of bytes, other bytes: what a size check cannot see."""
    path = f"{sync.root}/checkpoint-{step}/{rel}"
    data = sync.fs.cat(path)
    sync.fs.pipe(path, bytes(b ^ 0x20 for b in data))


def test_a_shard_altered_in_the_bucket_is_refused_naming_it_and_never_restored(bucket, tmp_path, monkeypatch):
    from components.training.checkpoint_trust import CheckpointRefused
    from components.training.checkpoints import CheckpointSync, resume_checkpoint
    monkeypatch.setenv("WORLD_SIZE", "2")
    sync = CheckpointSync(bucket)
    _put(sync, 100, {**_files(0, 100), **_files(1, 100)}, marked=True)
    shard = "global_step100/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    _tamper(sync, 100, shard)
    node = tmp_path / "node"
    with pytest.raises(CheckpointRefused, match=f"checkpoint-100/{shard}: .*sha256"):
        resume_checkpoint(node, sync)
    assert sorted(p.name for p in node.iterdir()) == []  # nothing a Trainer could load, no temp directory left


def test_a_manifest_key_outside_the_checkpoint_is_refused_and_nothing_is_written_outside(bucket, tmp_path,
                                                                                        monkeypatch):
    from components.training.checkpoint_trust import CheckpointRefused
    from components.training.checkpoints import MARKER, CheckpointSync, resume_checkpoint
    monkeypatch.setenv("WORLD_SIZE", "2")
    sync = CheckpointSync(bucket)
    files = {**_files(0, 100), **_files(1, 100)}
    _put(sync, 100, files, marked=True)
    root = f"{sync.root}/checkpoint-100"
    sync.fs.pipe(f"{root}/../../evil", b"import os")  # the bucket holds the key literally
    for key in ("../../evil", "/tmp/evil", "global_step100/../../../evil"):
        entry = {"size": 9, "sha256": hashlib.sha256(b"import os").hexdigest()}
        manifest = {**{rel: {"size": len(t), "sha256": hashlib.sha256(t.encode()).hexdigest()}
                       for rel, t in files.items()}, key: entry}
        sync.fs.pipe(f"{root}/{MARKER}", json.dumps({"step": 100, "files": manifest}).encode())
        node = tmp_path / "a" / "b" / "node"
        with pytest.raises(CheckpointRefused, match=f"refusing the key '{re.escape(key)}'"):
            resume_checkpoint(node, sync)
        assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["a", "a/b", "a/b/node"]


def _whole_plain(path: Path) -> list[str]:
    """A checkpoint of the plain Trainer, one process, one file in a subdirectory."""
    files = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
             "extra/notes.txt"]
    for rel in files:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(rel)
    return files


def test_complete_is_written_only_after_the_files_and_directories_it_vouches_for_are_fsynced(tmp_path,
                                                                                               monkeypatch):
    from components.training.checkpoints import MARKER, CheckpointSync
    work = tmp_path / "work"
    local = work / "checkpoint-3"
    sync = CheckpointSync(None)
    args, state = SimpleNamespace(output_dir=str(work)), SimpleNamespace(global_step=3)
    sync.on_step_end(args, state, SimpleNamespace(should_save=True))
    files = _whole_plain(local)
    events, fsync, replace = [], os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recording_replace(src, dst):
        replace(src, dst)
        events.append(("replace", str(dst)))
    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    sync.on_save(args, state, None)
    assert (local / MARKER).is_file()
    marked = events.index(("replace", str(local / MARKER)))
    before = {path for kind, path in events[:marked] if kind == "fsync"}
    assert {str(local / rel) for rel in files} | {str(local), str(local / "extra")} <= before
    assert any(p.startswith(str(local / f".{MARKER}.")) for p in before)  # the marker's own bytes
    assert ("fsync", str(local)) in events[marked:]  # and its directory entry


def test_resume_never_deletes_a_checkpoint_the_run_did_not_write(tmp_path, caplog):
    """A user's own checkpoint-7 (no COMPLETE, no save marker) is moved aside whole, with a warning; the run's
    own unmarked checkpoint-9 (a save cut short) is deleted; the marked checkpoint-5 is resumed."""
    from components.training.checkpoints import WRITER, CheckpointSync, mark_complete, resume_checkpoint
    work = tmp_path / "work"
    _whole_plain(work / "checkpoint-5")
    mark_complete(work / "checkpoint-5", {"step": 5, "world_size": 1})
    user = {rel: (work / "checkpoint-7" / rel) for rel in _whole_plain(work / "checkpoint-7")}
    sync = CheckpointSync(None)
    sync.on_step_end(SimpleNamespace(output_dir=str(work)), SimpleNamespace(global_step=9),
                     SimpleNamespace(should_save=True))
    (work / "checkpoint-9" / "model.safetensors").write_text("half")
    assert (work / "checkpoint-9" / WRITER).is_file()
    with caplog.at_level("WARNING", logger="components.training.checkpoints"):
        assert resume_checkpoint(work, sync) == str(work / "checkpoint-5")
    assert not (work / "checkpoint-9").exists() and not (work / "checkpoint-7").exists()
    [aside] = [p for p in work.iterdir() if p.name.startswith("set-aside-checkpoint-7-")]
    assert {rel: (aside / rel).read_text() for rel in user} == {rel: rel for rel in user}
    assert "checkpoint-7" in caplog.text and str(aside) in caplog.text
    assert resume_checkpoint(work, sync) == str(work / "checkpoint-5")  # the set-aside copy is left alone
    assert aside.is_dir()
