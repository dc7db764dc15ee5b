"""Training checkpoints: complete-or-ignored, locally and mirrored to durable storage (S3 or any fsspec URL).

After the Trainer saves ``checkpoint-N``, every process uploads only the files it
owns: the files that name a rank (ZeRO-3 shards ``*zero_pp_rank_R_*``, RNG state
``rng_state_R.pth``) belong to rank R, all others to rank 0, so no two processes
ever write the same key, whether the ranks share a disk or not. After a barrier,
rank 0 writes ``COMPLETE`` with the manifest (file -> size) next to the remote
copy, and each node's local rank 0 writes ``COMPLETE`` into its local directory.

Restore (:func:`resume_checkpoint`, every process calls it) considers only
checkpoints with the marker: on each node, local rank 0 deletes local
``checkpoint-N`` directories without one (a save or download cut short, an
empty directory another rank just created), downloads the newest complete
remote checkpoint if it is newer than the newest complete local one (into a
hidden temp directory, checked against the manifest, then renamed), and only
then, behind a barrier, do the processes pick the newest complete local
checkpoint to resume from.

    sync = CheckpointSync("s3://bucket/s1flow/sft")   # or None: local markers only
    resume = resume_checkpoint(work_dir, sync); Trainer(..., callbacks=[sync]).train(resume_from_checkpoint=resume)
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

from components.common.storage import url_to_fs

MARKER = "COMPLETE"
_STEP = re.compile(r"checkpoint-(\d+)$")
_RANKED = re.compile(r"(?:zero_pp_rank_|rng_state_)(\d+)")


def owner_rank(relative: str) -> int:
    """The process that writes (and uploads) a checkpoint file."""
    m = _RANKED.search(relative.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else 0


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def _ranks() -> tuple[int, int]:
    """(global rank, local rank) of this process."""
    dist = _dist()
    rank = dist.get_rank() if dist else int(os.environ.get("RANK", 0))
    return rank, int(os.environ.get("LOCAL_RANK", rank))  # launchers set LOCAL_RANK; else one node


def barrier() -> None:
    if dist := _dist():
        dist.barrier()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def local_steps(work_dir: Path, complete: bool = True) -> list[int]:
    """Steps of the ``checkpoint-N`` directories in work_dir (with the marker only, by default)."""
    if not work_dir.exists():
        return []
    return sorted(int(m.group(1)) for p in work_dir.iterdir() if p.is_dir() and (m := _STEP.search(p.name))
                  and (not complete or (p / MARKER).is_file()))


class CheckpointSync(TrainerCallback):
    """Marks complete checkpoints (always) and mirrors them to ``uri`` (when set)."""

    def __init__(self, uri: Optional[str] = None):
        self.uri = uri.rstrip("/") if uri else None
        if self.uri:
            self.fs, self.root = url_to_fs(self.uri)

    def _remote(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def complete_steps(self) -> list[int]:
        if not self.uri:
            return []
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return []
        steps = []
        for path in self.fs.ls(self.root, detail=False):
            m = _STEP.search(path.rstrip("/"))
            if m and self.fs.exists(f"{path.rstrip('/')}/{MARKER}"):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def upload(self, local: Path, rank: int = 0) -> list[str]:
        """Upload the files of ``local`` this rank owns; returns their relative paths."""
        remote, done = self._remote(local.name), []
        for f in sorted(p for p in local.rglob("*") if p.is_file() and p.name != MARKER):
            rel = f.relative_to(local).as_posix()
            if owner_rank(rel) != rank:
                continue
            self.fs.makedirs(f"{remote}/{f.parent.relative_to(local)}".rstrip("/."), exist_ok=True)
            self.fs.put_file(str(f), f"{remote}/{rel}")
            done.append(rel)
        return done

    def _manifest(self, name: str) -> dict[str, int]:
        remote = self._remote(name)
        self.fs.invalidate_cache()
        return {p[len(remote):].lstrip("/"): int(info.get("size") or 0)
                for p, info in self.fs.find(remote, detail=True).items() if not p.endswith(f"/{MARKER}")}

    def on_save(self, args, state, control, **kw):
        rank, local_rank = _ranks()
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.uri and local.exists():
            self.upload(local, rank)
        barrier()  # every rank's files are written (and uploaded)
        if local_rank == 0 and local.exists():
            _write_atomic(local / MARKER, json.dumps({"step": state.global_step}))
        if self.uri and rank == 0:
            manifest = self._manifest(local.name)
            with self.fs.open(f"{self._remote(local.name)}/{MARKER}", "w") as f:
                f.write(json.dumps({"step": state.global_step, "files": manifest}))

    def restore_latest(self, work_dir: Path) -> Optional[Path]:
        """Download the newest complete remote checkpoint unless work_dir already holds a complete one as new.

        The download goes to a hidden temp directory and is checked against the remote manifest before it
        is renamed into place and marked, so an interrupted download is never mistaken for a checkpoint."""
        steps = self.complete_steps()
        if not steps or (local_steps(work_dir) and local_steps(work_dir)[-1] >= steps[-1]):
            return None
        name = f"checkpoint-{steps[-1]}"
        remote = self._remote(name)
        with self.fs.open(f"{remote}/{MARKER}", "r") as f:
            manifest = json.loads(f.read() or "{}").get("files")
        tmp = work_dir / f".restore-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for path in self.fs.find(remote):
            rel = path[len(remote):].lstrip("/")
            if rel == MARKER:
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(path, str(tmp / rel))
        if manifest is not None:
            got = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
            if got != manifest:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(f"{remote}: download does not match its manifest "
                                   f"(missing {sorted(set(manifest) - set(got))[:5]})")
        target = work_dir / name
        shutil.rmtree(target, ignore_errors=True)  # incomplete (no marker), or it would not be downloaded
        _write_atomic(tmp / MARKER, json.dumps({"step": steps[-1], "restored_from": f"{self.uri}/{name}"}))
        try:
            os.rename(tmp, target)
        except OSError:  # another node sharing this disk put it there first
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def resume_checkpoint(work_dir: str | Path, sync: Optional[CheckpointSync] = None) -> Optional[str]:
    """The checkpoint every process resumes from: the newest complete one, local or remote.

    Call it on every process: local rank 0 of each node drops incomplete local checkpoints and restores
    from ``sync``'s storage; the others wait at a barrier, then all pick the same newest complete one."""
    work_dir = Path(work_dir)
    _, local_rank = _ranks()
    if local_rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        complete = set(local_steps(work_dir))
        for step in local_steps(work_dir, complete=False):
            if step not in complete:
                shutil.rmtree(work_dir / f"checkpoint-{step}", ignore_errors=True)
        if sync is not None and sync.uri:
            sync.restore_latest(work_dir)
    barrier()
    steps = local_steps(work_dir)
    return str(work_dir / f"checkpoint-{steps[-1]}") if steps else None
