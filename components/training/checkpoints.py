"""Training checkpoints mirrored to durable storage (S3 or any fsspec URL), and restored from it.

After the Trainer saves ``checkpoint-N`` locally, every process uploads what it
wrote (ZeRO-3 shards live on each node's disk), then rank 0 writes a ``COMPLETE``
marker: a checkpoint without one is never restored. A fresh machine (or a killed
run on a new node) restores the newest complete checkpoint into the work
directory and the Trainer resumes from it with the same data order.

    CheckpointSync("s3://bucket/s1flow/sft").restore_latest(work_dir)
    Trainer(..., callbacks=[CheckpointSync("s3://bucket/s1flow/sft")])
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

MARKER = "COMPLETE"
_STEP = re.compile(r"checkpoint-(\d+)$")


class CheckpointSync(TrainerCallback):
    def __init__(self, uri: str):
        import fsspec
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

    def _remote(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def complete_steps(self) -> list[int]:
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return []
        steps = []
        for path in self.fs.ls(self.root, detail=False):
            m = _STEP.search(path.rstrip("/"))
            if m and self.fs.exists(f"{path.rstrip('/')}/{MARKER}"):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def upload(self, local: Path) -> None:
        remote = self._remote(local.name)
        for f in sorted(p for p in local.rglob("*") if p.is_file()):
            self.fs.makedirs(f"{remote}/{f.parent.relative_to(local)}".rstrip("/."), exist_ok=True)
            self.fs.put_file(str(f), f"{remote}/{f.relative_to(local)}")

    def on_save(self, args, state, control, **kw):
        import torch.distributed as dist
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if local.exists():
            self.upload(local)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            with self.fs.open(f"{self._remote(local.name)}/{MARKER}", "w") as f:
                f.write(str(state.global_step))

    def restore_latest(self, work_dir: Path) -> Optional[Path]:
        """Download the newest complete remote checkpoint unless work_dir already holds one as new."""
        steps = self.complete_steps()
        if not steps:
            return None
        local_steps = [int(m.group(1)) for p in work_dir.glob("checkpoint-*") if (m := _STEP.search(p.name))]
        if local_steps and max(local_steps) >= steps[-1]:
            return None
        name = f"checkpoint-{steps[-1]}"
        target = work_dir / name
        target.mkdir(parents=True, exist_ok=True)
        remote = self._remote(name)
        for path in self.fs.find(remote):
            rel = path[len(remote):].lstrip("/")
            if rel == MARKER:
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(path, str(target / rel))
        return target
