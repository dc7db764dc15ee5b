"""Training checkpoints: complete-or-ignored, locally and mirrored to durable storage (S3 or any fsspec URL).

After the Trainer saves ``checkpoint-N``, every process uploads only the files it
owns: the files that name a rank (ZeRO-3 shards ``*zero_pp_rank_R_*``, RNG state
``rng_state_R.pth``) belong to rank R, all others to rank 0, so no two processes
ever write the same key, whether the ranks share a disk or not. After a barrier,
``COMPLETE`` marks a checkpoint only where it holds every file a resume of all
ranks needs (:func:`missing_for_resume`: ``trainer_state.json``, each rank's RNG
state, and under DeepSpeed ``latest`` plus each rank's model and optimizer shards
in its ``global_stepN`` directory; transformers 5.19 writes ``trainer_state.json``
and DeepSpeed 0.19.8 writes ``latest`` on global rank 0 only). Rank 0 marks the
remote copy, with the manifest (file -> size); a step saved again (a restarted run)
loses its old marker before any upload. Each node's local rank 0 marks its local
directory only if it is whole there: on a node without a disk shared with rank 0
it is not, and that node resumes from the remote copy. A local ``COMPLETE`` is
written only after every file it vouches for and their directories are fsynced.

Remotely, the marker carries the manifest of the save: each file's size and
SHA-256, hashed by the rank that uploaded it and gathered on rank 0. A restore
downloads exactly the files the manifest lists, refuses a key that is not a plain
relative path inside the checkpoint, and refuses the checkpoint (naming the file,
nothing renamed into place) when a file's size or hash differs from the manifest;
see components/training/checkpoint_trust.py for what the loaders accept.

Before the Trainer saves ``checkpoint-N``, local rank 0 of each node writes
``.s1flow-checkpoint`` into it (and drops a ``COMPLETE`` left there by an earlier
save of that step): the directory is this run's. Restore (:func:`resume_checkpoint`,
every process calls it) considers only checkpoints that are marked and whole: on
each node, local rank 0 deletes the run's own local ``checkpoint-N`` directories
that are not (a save or download cut short, another node's share of the files)
and empty ones (a directory another rank just created); a ``checkpoint-N`` the run
did not write (neither marker) is moved aside to ``set-aside-checkpoint-N-<time>``
with a warning, never deleted;
downloads the newest remote checkpoint whose bucket listing holds every needed
file (a marked but partial one is skipped with a warning, and the one before it
is used) if it is newer than the newest local one (into a hidden temp directory,
checked against the manifest, then renamed), and only then, behind a barrier, do
the processes pick the newest complete local checkpoint to resume from.

    sync = CheckpointSync("s3://bucket/s1flow/sft")   # or None: local markers only
    resume = resume_checkpoint(work_dir, sync); Trainer(..., callbacks=[sync]).train(resume_from_checkpoint=resume)
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterable, Optional

from transformers import TrainerCallback

from components.common.storage import url_to_fs
from components.training.checkpoint_trust import CheckpointRefused, inside, safe_key, sha256_file

MARKER = "COMPLETE"
WRITER = ".s1flow-checkpoint"  # in a checkpoint directory this run's Trainer saves into
_STEP = re.compile(r"(?:^|/)checkpoint-(\d+)$")
_RANKED = re.compile(r"(?:zero_pp_rank_|rng_state_)(\d+)")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
log = logging.getLogger(__name__)


def missing_for_resume(files: Iterable[str], world_size: int, latest_tag: Optional[str] = None) -> list[str]:
    """What a checkpoint directory (its files, relative paths) lacks for ``world_size`` ranks to resume from it;
    [] when it is whole. ``latest_tag``: the content of its DeepSpeed ``latest`` file (the ``global_stepN``
    directory the engine loads), when there is one.

    The Trainer resumes silently from step 0 without ``trainer_state.json`` and DeepSpeed cannot load without
    ``latest``; each rank loads its own RNG state and, under ZeRO, its own model and optimizer shards."""
    files = set(files)
    need = ["trainer_state.json"]
    need += ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{r}.pth" for r in range(world_size)]
    missing = [f for f in need if f not in files]
    deepspeed = "latest" in files or any(f.startswith("global_step") for f in files)
    if not deepspeed:
        if not any(w in files for w in _WEIGHTS):
            missing.append("model.safetensors")
        missing += [f for f in ("optimizer.pt", "scheduler.pt") if f not in files]
        return missing
    if "latest" not in files or not latest_tag:
        return [*missing, "latest"]
    tag = latest_tag.strip()
    if tag in ("", ".", "..") or "/" in tag or "\\" in tag:  # DeepSpeed loads from <checkpoint>/<tag>/
        return [*missing, "latest"]
    in_tag = {f[len(tag) + 1:] for f in files if f.startswith(f"{tag}/")}
    if not in_tag:
        return [*missing, f"{tag}/"]
    shared_model = any(re.fullmatch(r"mp_rank_\d+_model_states\.pt", f) for f in in_tag)  # ZeRO-1/2: one file
    for r in range(world_size):
        if not shared_model and not any(re.fullmatch(rf"zero_pp_rank_{r}_mp_rank_\d+_model_states\.pt", f)
                                        for f in in_tag):
            missing.append(f"{tag}/zero_pp_rank_{r}_mp_rank_00_model_states.pt")
        if not any(re.fullmatch(rf"(?:bf16_)?zero_pp_rank_{r}_mp_rank_\d+_optim_states\.pt", f) for f in in_tag):
            missing.append(f"{tag}/zero_pp_rank_{r}_mp_rank_00_optim_states.pt")
    return missing


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


def _world() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", 1))


def barrier() -> None:
    if dist := _dist():
        dist.barrier()


def _gather(obj) -> list:
    """``obj`` of every rank (a collective: every rank calls it), in rank order."""
    dist = _dist()
    if not dist:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file below ``root`` on disk, then every directory's entries, deepest first, ``root`` last."""
    dirs = []
    for where, _, files in os.walk(root):
        for name in files:
            _fsync(Path(where) / name)
        dirs.append(Path(where))
    for d in reversed(dirs):
        _fsync(d)


def _write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` on disk, or is as it was: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def mark_complete(path: Path, record: dict) -> None:
    """Write ``path``'s COMPLETE marker once every file and directory it vouches for is on disk."""
    fsync_tree(path)
    _write_atomic(path / MARKER, json.dumps(record))


def written_here(path: Path) -> bool:
    """Whether this run wrote the checkpoint directory ``path`` (its save marker, or its COMPLETE)."""
    return (path / WRITER).is_file() or (path / MARKER).is_file()


def set_aside(path: Path) -> Optional[Path]:
    """Move a ``checkpoint-N`` this run did not write out of the Trainer's way (its rotation and saves touch
    ``checkpoint-*``), keeping every file; an empty one is removed. Returns where it went."""
    try:
        path.rmdir()
        return None
    except FileNotFoundError:
        return None
    except OSError:
        pass
    aside = path.with_name(f"set-aside-{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        path.rename(aside)
    except FileNotFoundError:  # another node sharing this disk moved it first
        return None
    log.warning("%s holds no COMPLETE marker and was not written by this run: moved to %s, untouched and not "
                "resumed from (move it back only as a whole checkpoint with its COMPLETE)", path, aside)
    return aside


def local_missing(path: Path, world_size: int) -> list[str]:
    """What the local checkpoint directory ``path`` lacks for ``world_size`` ranks to resume (see missing_for_resume)."""
    files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name not in (MARKER, WRITER)]
    latest = path / "latest"
    return missing_for_resume(files, world_size, latest.read_text() if latest.is_file() else None)


def local_steps(work_dir: Path, complete: bool = True, world_size: Optional[int] = None) -> list[int]:
    """Steps of the ``checkpoint-N`` directories in work_dir (with the marker only, by default; with
    ``world_size``, also only those holding every file that many ranks resume from)."""
    if not work_dir.exists():
        return []
    return sorted(int(m.group(1)) for p in work_dir.iterdir() if p.is_dir() and (m := _STEP.fullmatch(p.name))
                  and (not complete or ((p / MARKER).is_file()
                                        and (world_size is None or not local_missing(p, world_size)))))


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

    def upload(self, local: Path, rank: int = 0) -> dict[str, dict]:
        """Upload the files of ``local`` this rank owns; returns {relative path: {"size", "sha256"}} of them."""
        remote, done = self._remote(local.name), {}
        for f in sorted(p for p in local.rglob("*") if p.is_file() and p.name not in (MARKER, WRITER)):
            rel = f.relative_to(local).as_posix()
            if owner_rank(rel) != rank:
                continue
            done[rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
            self.fs.makedirs(f"{remote}/{f.parent.relative_to(local)}".rstrip("/."), exist_ok=True)
            self.fs.put_file(str(f), f"{remote}/{rel}")
        return done

    def _listing(self, name: str) -> dict[str, int]:
        """{relative path: size} of the bucket's copy of ``name``, from its listing."""
        remote = self._remote(name)
        self.fs.invalidate_cache()
        return {p[len(remote):].lstrip("/"): int(info.get("size") or 0)
                for p, info in self.fs.find(remote, detail=True).items() if not p.endswith(f"/{MARKER}")}

    def read_manifest(self, name: str) -> dict[str, dict]:
        """The manifest in the bucket's ``name/COMPLETE``: {relative path: {"size", "sha256"}} ({} without one);
        CheckpointRefused for a key outside the checkpoint. An entry without a SHA-256 keeps only its size."""
        where = f"{self.uri}/{name}/{MARKER}"
        try:
            with self.fs.open(f"{self._remote(name)}/{MARKER}", "r") as f:
                files = json.loads(f.read() or "{}").get("files") or {}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError) as e:
            raise CheckpointRefused(f"{where}: not a manifest ({e})") from e
        if not isinstance(files, dict):
            raise CheckpointRefused(f"{where}: 'files' is not a mapping of file -> size and sha256")
        return {safe_key(rel, where): entry if isinstance(entry, dict) else {"size": entry}
                for rel, entry in files.items()}

    def _remote_latest(self, name: str, files) -> Optional[str]:
        if "latest" not in files:
            return None
        with self.fs.open(f"{self._remote(name)}/latest", "r") as f:
            return f.read()

    def remote_missing(self, name: str, world_size: int) -> list[str]:
        """What the bucket's copy of ``name`` lacks for ``world_size`` ranks to resume: only the files its
        marker's manifest lists count, each only if the listing holds it at the manifest's size and the
        manifest gives its SHA-256 (a restore checks the bytes against it)."""
        listing, manifest = self._listing(name), self.read_manifest(name)
        present = {f for f, e in manifest.items() if listing.get(f) == e.get("size") and e.get("sha256")}
        missing = missing_for_resume(present, world_size, self._remote_latest(name, present))
        why = {f: "not in the bucket" if f not in listing else "no sha256 in its manifest"
               if listing[f] == manifest[f].get("size") else "another size in the bucket"
               for f in set(manifest) - present}
        return [m if m not in why else f"{m} ({why[m]})" for m in missing] + sorted(
            f"{f} ({reason})" for f, reason in why.items() if f not in missing)

    def _mark_saving(self, args, state, control) -> None:
        """Before the Trainer saves a step: its directory is this run's, and unmarked until whole again."""
        if not control.should_save or _ranks()[1] != 0:
            return
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        local.mkdir(parents=True, exist_ok=True)
        (local / MARKER).unlink(missing_ok=True)
        _write_atomic(local / WRITER, json.dumps({"step": state.global_step}))

    def on_step_end(self, args, state, control, **kw):
        self._mark_saving(args, state, control)

    def on_epoch_end(self, args, state, control, **kw):
        self._mark_saving(args, state, control)

    def on_save(self, args, state, control, **kw):
        rank, local_rank = _ranks()
        world = _world()
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.uri and rank == 0:
            # a run resumed from an older checkpoint saves this step again: the bucket's copy loses its marker
            # before any rank overwrites a file of it, so a run lost mid-upload never resumes from a mix of both
            marker = f"{self._remote(local.name)}/{MARKER}"
            self.fs.invalidate_cache()
            if self.fs.exists(marker):
                self.fs.rm(marker)
        if self.uri:
            barrier()
            # every rank's files are written and uploaded; rank 0 gets their sizes and hashes
            shares = _gather(self.upload(local, rank) if local.exists() else {})
        else:
            barrier()  # every rank's files are written
        # a node that shares no disk with the others holds only its ranks' files: left unmarked, it resumes
        # from the remote copy
        if local_rank == 0 and local.exists() and not local_missing(local, world):
            mark_complete(local, {"step": state.global_step, "world_size": world})
        if self.uri and rank == 0:
            manifest = {rel: entry for share in shares for rel, entry in share.items()}
            listing = self._listing(local.name)
            landed = {f for f, e in manifest.items() if listing.get(f) == e["size"]}
            missing = missing_for_resume(landed, world, self._remote_latest(local.name, landed))
            missing += sorted(set(manifest) - landed)
            if missing:
                log.warning("%s/%s is not marked COMPLETE: a resume of %d ranks needs %s, missing from the bucket",
                            self.uri, local.name, world, missing[:5])
                return
            with self.fs.open(f"{self._remote(local.name)}/{MARKER}", "w") as f:
                f.write(json.dumps({"step": state.global_step, "world_size": world, "files": manifest}))

    def resumable_step(self, world_size: int, newer_than: int = -1) -> Optional[int]:
        """The newest marked remote checkpoint above ``newer_than`` whose bucket copy holds every file
        ``world_size`` ranks resume from; a marked but partial one is skipped with a warning."""
        for step in reversed(self.complete_steps()):
            if step <= newer_than:
                return None
            missing = self.remote_missing(f"checkpoint-{step}", world_size)
            if not missing:
                return step
            log.warning("skipping %s/checkpoint-%d: marked COMPLETE but a resume of %d ranks needs %s, missing from "
                        "the bucket or from its manifest; resuming from an older checkpoint", self.uri, step,
                        world_size, missing[:5])
        return None

    def restore_latest(self, work_dir: Path, world_size: int = 1) -> Optional[Path]:
        """Download the newest whole remote checkpoint unless work_dir already holds a complete one as new.

        Exactly the files of the remote manifest are downloaded, into a hidden temp directory; each must have
        the manifest's size and SHA-256, else CheckpointRefused names it and nothing is renamed into place.
        Only then is the directory fsynced, marked and renamed, so an interrupted or altered download is never
        mistaken for a checkpoint."""
        have = local_steps(work_dir, world_size=world_size)
        step = self.resumable_step(world_size, newer_than=have[-1] if have else -1)
        if step is None:
            return None
        name = f"checkpoint-{step}"
        remote = self._remote(name)
        manifest = self.read_manifest(name)
        tmp = work_dir / f".restore-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for rel, entry in sorted(manifest.items()):
                dest = inside(tmp, rel, f"{self.uri}/{name}/{MARKER}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{remote}/{rel}", str(dest))
                size, digest = dest.stat().st_size, sha256_file(dest)
                if (size, digest) != (entry.get("size"), entry.get("sha256")):
                    raise CheckpointRefused(
                        f"{self.uri}/{name}/{rel}: {size} bytes, sha256 {digest}; its manifest lists "
                        f"{entry.get('size')} bytes, sha256 {entry.get('sha256')}. Refusing to load this checkpoint: "
                        f"the file is not the one the run that saved it wrote. Delete {self.uri}/{name}/{MARKER} "
                        f"to resume from an older checkpoint")
            mark_complete(tmp, {"step": step, "world_size": world_size, "restored_from": f"{self.uri}/{name}"})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        target = work_dir / name
        if target.exists():  # incomplete (it would not be downloaded otherwise)
            if written_here(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                set_aside(target)
        try:
            os.rename(tmp, target)
            _fsync(work_dir)
        except OSError:  # another node sharing this disk put it there first
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def restored_from(checkpoint: Optional[str | Path]) -> Optional[str]:
    """The remote copy a local checkpoint was downloaded from (its marker says so); None for one saved here."""
    marker = Path(checkpoint) / MARKER if checkpoint else None
    if marker is None or not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text() or "{}").get("restored_from")
    except ValueError:
        return None


def resume_checkpoint(work_dir: str | Path, sync: Optional[CheckpointSync] = None) -> Optional[str]:
    """The checkpoint every process resumes from: the newest complete one, local or remote.

    Call it on every process: local rank 0 of each node drops the incomplete local checkpoints this run wrote
    (and empty ones), sets aside any other unmarked ``checkpoint-N`` (:func:`set_aside`), and restores from
    ``sync``'s storage; the others wait at a barrier, then all pick the same newest complete one."""
    work_dir = Path(work_dir)
    _, local_rank = _ranks()
    world = _world()
    if local_rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        complete = set(local_steps(work_dir, world_size=world))
        for step in local_steps(work_dir, complete=False):
            path = work_dir / f"checkpoint-{step}"
            if step in complete:
                continue
            if written_here(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                set_aside(path)
        if sync is not None and sync.uri:
            sync.restore_latest(work_dir, world)
    barrier()
    steps = local_steps(work_dir, world_size=world)
    return str(work_dir / f"checkpoint-{steps[-1]}") if steps else None
