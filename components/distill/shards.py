"""Append-only result shards keyed by record id: the resume log of long batch jobs.

The worker that finishes a batch writes it as its own shard before it reports
back, so a crash or SIGKILL anywhere leaves only whole shards and loses at most
the batches still in flight. Local shards are written to a temp file, fsynced
and renamed; on object stores (``s3://…``, through fsspec) an object appears
only once it is complete. On a cluster the root must be storage every worker
sees (S3, or a shared filesystem).

On restart the job asks :meth:`ShardStore.done_ids` what to skip; a failed
record stays retryable until a later shard holds it as done.

    store = ShardStore("runs/tiny/distill/abc123")     # or "s3://bucket/distill/abc123"
    todo = [q for q in pool if q.id not in store.done_ids()]
    store.write(rows)            # rows: dicts with "question_id" and "ok"
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from components.records import write_jsonl


def latest_rows(rows: Iterable[dict], id_key: str = "question_id") -> dict[str, dict]:
    """One row per id: the first successful one, else the latest failure."""
    out: dict[str, dict] = {}
    for row in rows:
        key = row[id_key]
        if key not in out or not out[key].get("ok", True):
            out[key] = row
    return out


class ShardStore:
    def __init__(self, root: str | Path, id_key: str = "question_id"):
        import fsspec
        root = str(root)
        self.fs, path = fsspec.core.url_to_fs(root)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols
        self.root = str(Path(path).resolve()) if self.local else path.rstrip("/")
        self.url = self.root if self.local else root.rstrip("/")
        self.id_key = id_key
        self.fs.makedirs(self.root, exist_ok=True)

    def shards(self) -> list[str]:
        self.fs.invalidate_cache(self.root)  # other processes (workers) add shards
        return sorted(self.fs.glob(f"{self.root}/shard-*.jsonl"), key=lambda p: p.rsplit("/", 1)[-1])

    def rows(self) -> Iterator[dict]:
        """Every row of every complete shard, oldest shard first."""
        for path in self.shards():
            with self.fs.open(path, "r") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)

    def latest(self) -> dict[str, dict]:
        return latest_rows(self.rows(), self.id_key)

    def done_ids(self) -> set[str]:
        return {k for k, row in self.latest().items() if row.get("ok", True)}

    def write(self, rows: list[dict]) -> str:
        """Write one shard atomically; names sort by time, then are unique per writer."""
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        final = f"{self.root}/{name}"
        if self.local:
            write_jsonl(final, rows)  # temp file (hidden from shards()), fsync, rename
            return final
        with self.fs.open(final, "w") as f:  # the object exists only once closed
            f.write("".join(json.dumps(row) + "\n" for row in rows))
        return final
