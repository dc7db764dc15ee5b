"""Append-only result shards keyed by record id: the resume log of long batch jobs.

The worker that finishes a batch writes it as its own shard before it reports
back, so a crash or SIGKILL anywhere leaves only whole shards and loses at most
the batches still in flight. Local shards are written to a temp file, fsynced
and renamed; on object stores (``s3://…``, through fsspec) an object appears
only once it is complete. On a cluster the root must be storage every worker
sees (S3, or a shared filesystem).

On restart the job asks :meth:`ShardStore.done_ids` what to skip; a failed
record stays retryable until a later shard holds it as done.

One job at a time per store: :meth:`ShardStore.lock` refuses a second run over
the same shards (both would pay for every pending question). Locally it is an
``flock`` on ``<root>/LOCK``, released by the kernel when the holder dies, so a
crashed run never blocks the next one. On object stores it is a ``LOCK`` object
whose holder rewrites a heartbeat every ``stale_after_s / 5``; a lock whose
heartbeat is older than ``stale_after_s`` (or whose holder process is gone, on
the same host) is stale and taken over.

    store = ShardStore("runs/tiny/distill/abc123")     # or "s3://bucket/distill/abc123"
    todo = [q for q in pool if q.id not in store.done_ids()]
    store.write(rows)            # rows: dicts with "question_id" and "ok"
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from components.common.storage import url_to_fs
from components.records import write_jsonl


def latest_rows(rows: Iterable[dict], id_key: str = "question_id") -> dict[str, dict]:
    """One row per id: the first successful one, else the latest failure."""
    out: dict[str, dict] = {}
    for row in rows:
        key = row[id_key]
        if key not in out or not out[key].get("ok", True):
            out[key] = row
    return out


class LockHeld(RuntimeError):
    """Another live run holds the store."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {since}"


class ShardStore:
    def __init__(self, root: str | Path, id_key: str = "question_id"):
        root = str(root)
        self.fs, path = url_to_fs(root)
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

    @contextmanager
    def lock(self, stale_after_s: float = 600.0, clock: Callable[[], float] = time.time) -> Iterator[dict]:
        """Hold the store for this run; raises :class:`LockHeld` (naming the holder) if a live run has it."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": clock(), "token": uuid.uuid4().hex}
        if self.local:
            with self._local_lock(me):
                yield me
        else:
            with self._remote_lock(me, stale_after_s, clock):
                yield me

    def _refusal(self, holder: dict) -> LockHeld:
        return LockHeld(f"{self.url} is in use by another run ({_holder_text(holder)}); two runs over the same "
                        "shards would both pay for every pending question. Wait for it to finish or stop it, "
                        "then run again (finished work is kept).")

    @contextmanager
    def _local_lock(self, me: dict):
        import fcntl
        fd = os.open(f"{self.root}/LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
                except ValueError:
                    holder = {}
                raise self._refusal(holder) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)  # who holds it, for the refusal message
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read_remote_lock(self, path: str) -> dict | None:
        self.fs.invalidate_cache(self.root)
        try:
            with self.fs.open(path, "r") as f:
                return json.loads(f.read() or "{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # torn: treated as stale below (no heartbeat)

    @contextmanager
    def _remote_lock(self, me: dict, stale_after_s: float, clock: Callable[[], float]):
        path = f"{self.root}/LOCK"
        holder = self._read_remote_lock(path)
        if holder is not None and holder.get("token") != me["token"]:
            gone = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                and not _pid_alive(holder["pid"])
            if not gone and clock() - float(holder.get("heartbeat", 0)) < stale_after_s:
                raise self._refusal(holder)

        def beat() -> None:
            with self.fs.open(path, "w") as f:
                f.write(json.dumps({**me, "heartbeat": clock()}))
        beat()
        if (self._read_remote_lock(path) or {}).get("token") != me["token"]:  # lost a race to take it
            raise self._refusal(self._read_remote_lock(path) or {})
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(stale_after_s / 5):
                beat()
        thread = threading.Thread(target=heartbeat, name="shard-lock-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            if (self._read_remote_lock(path) or {}).get("token") == me["token"]:
                self.fs.rm(path)
