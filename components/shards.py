"""Append-only result shards keyed by record id: the resume log of long batch jobs.

Each finished batch is written as its own shard (temp file, fsync, rename), so a
crash or SIGKILL leaves only whole shards behind and loses at most the batches
still in flight. On restart the job asks :meth:`ShardStore.done_ids` what to
skip; a failed record stays retryable until a later shard holds it as done.

    store = ShardStore(Path("runs/tiny/distill/abc123"))
    todo = [q for q in pool if q.id not in store.done_ids()]
    store.write(rows)            # rows: dicts with "id" and "ok"
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator


class ShardStore:
    def __init__(self, root: Path, id_key: str = "question_id"):
        self.root, self.id_key = Path(root), id_key
        self.root.mkdir(parents=True, exist_ok=True)
        self._seq = 0

    def shards(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.jsonl"))

    def rows(self) -> Iterator[dict]:
        """Every row of every complete shard, oldest shard first."""
        for path in self.shards():
            with open(path) as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)

    def latest(self) -> dict[str, dict]:
        """One row per id: the first successful one, else the latest failure."""
        out: dict[str, dict] = {}
        for row in self.rows():
            key = row[self.id_key]
            if key not in out or not out[key].get("ok", True):
                out[key] = row
        return out

    def done_ids(self) -> set[str]:
        return {k for k, row in self.latest().items() if row.get("ok", True)}

    def write(self, rows: list[dict]) -> Path:
        """Write one shard atomically; its name sorts after every earlier shard."""
        self._seq += 1
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / name)
        return self.root / name
