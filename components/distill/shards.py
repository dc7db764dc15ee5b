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
crashed run never blocks the next one. On S3 it is a ``LOCK`` object taken
with conditional writes, so of runs racing for it exactly one wins whatever
their timing: created with ``If-None-Match: *``, renewed every
``stale_after_s / 5`` and taken over (once its heartbeat is older than
``stale_after_s``, or its holder process is gone, on the same host) with
``If-Match: <the ETag read>``. A write whose condition fails is judged by the
object's token: the S3 client retries a write whose answer was lost, and the
retry of a write that landed fails its condition, so finding this run's own
token means the write went through. A holder whose renewal finds another run's
version, or whose heartbeat keeps failing for ``stale_after_s / 2``, has lost
the lock: :class:`HeldLock` reports it (logged, never silent) and the run stops
paying. Other object stores are refused for locking (no atomic conditional write).

    store = ShardStore("runs/tiny/distill/abc123")     # or "s3://bucket/distill/abc123"
    todo = [q for q in pool if q.id not in store.done_ids()]
    store.write(rows)            # rows: dicts with "question_id" and "ok"
"""
from __future__ import annotations

import json
import logging
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

log = logging.getLogger(__name__)


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


class LockLost(RuntimeError):
    """This run's hold on the store ended while it ran (its heartbeat failed, or another run took the lock)."""


class HeldLock:
    """A run's hold on a store: ``info`` names the holder (host, pid, token); ``lost`` says why the hold ended
    early (None while it holds). Whoever pays under the lock registers :meth:`on_lost` to stop paying."""

    def __init__(self, info: dict):
        self.info, self.lost = info, None
        self._listeners: list[Callable[[str], None]] = []
        self._mu = threading.Lock()

    def on_lost(self, callback: Callable[[str], None]) -> None:
        with self._mu:
            self._listeners.append(callback)
            lost = self.lost
        if lost is not None:
            callback(lost)

    def lose(self, reason: str) -> None:
        with self._mu:
            if self.lost is not None:
                return
            self.lost = reason
            listeners = list(self._listeners)
        log.error("shard lock lost: %s; this run starts no more paid calls", reason)
        for callback in listeners:
            try:
                callback(reason)
            except Exception:
                log.exception("shard lock lost: a listener failed")

    def check(self) -> None:
        """Raise :class:`LockLost` once the hold has ended."""
        if self.lost is not None:
            raise LockLost(f"the run lost its lock on the shards: {self.lost}. Finished work is kept; run again "
                           "once no other run is using the same shards.")


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
    def lock(self, stale_after_s: float = 600.0, clock: Callable[[], float] = time.time) -> Iterator[HeldLock]:
        """Hold the store for this run; raises :class:`LockHeld` (naming the holder) if a live run has it.
        The :class:`HeldLock` says when an object-store lock was lost while the run held it."""
        held = HeldLock({"host": socket.gethostname(), "pid": os.getpid(), "started": clock(),
                         "token": uuid.uuid4().hex})
        if self.local:
            with self._local_lock(held.info):
                yield held
        else:
            with self._remote_lock(held, stale_after_s, clock):
                yield held

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

    def _s3(self, method: str, **kw) -> dict:
        """One S3 call through the store's own s3fs client (its endpoint and credentials); a body is read whole."""
        from fsspec.asyn import sync

        async def call() -> dict:
            out = await self.fs._call_s3(method, **kw)
            if "Body" in out:
                stream = out["Body"]
                try:
                    out["Body"] = await stream.read()
                finally:
                    stream.close()
            return out
        return sync(self.fs.loop, call)

    def _read_s3_lock(self, bucket: str, key: str) -> tuple[dict, str] | None:
        """(holder, ETag) of the LOCK object, None when there is none; a torn or foreign body reads as {}."""
        try:
            out = self._s3("get_object", Bucket=bucket, Key=key)
        except Exception as e:
            if _s3_failure(e) == "missing":
                return None
            raise
        try:
            holder = json.loads(out["Body"].decode() or "{}")
        except ValueError:
            holder = {}
        return (holder if isinstance(holder, dict) else {}), out["ETag"]

    def _put_s3_lock(self, bucket: str, key: str, body: dict, **condition: str) -> str:
        """Write the LOCK object only if ``condition`` holds (IfNoneMatch="*": it does not exist; IfMatch=etag: it
        is still the version read); returns the new ETag, raises :class:`_ConditionFailed` when the condition
        does not hold (another run wrote it in between)."""
        try:
            return self._s3("put_object", Bucket=bucket, Key=key, Body=json.dumps(body).encode(), **condition)["ETag"]
        except Exception as e:
            if _s3_failure(e) in ("precondition", "conflict", "missing"):
                raise _ConditionFailed(str(e)) from None
            raise

    def _take_s3_lock(self, bucket: str, key: str, held: HeldLock, stale_after_s: float,
                      clock: Callable[[], float]) -> str:
        """Create the LOCK object, or replace a stale one, with a conditional write: of runs racing for it exactly
        one write succeeds, whatever their timing. Returns the ETag this run holds."""
        me = held.info
        for _ in range(3):  # the holder may release it between our create and our read
            try:
                return self._put_s3_lock(bucket, key, {**me, "heartbeat": clock()}, IfNoneMatch="*")
            except _ConditionFailed:
                pass
            current = self._read_s3_lock(bucket, key)
            if current is None:
                continue
            holder, etag = current
            if holder.get("token") == me["token"]:
                return etag  # our own create, whose answer was lost and retried
            gone = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                and not _pid_alive(holder["pid"])
            if not gone and clock() - _heartbeat(holder) < stale_after_s:
                raise self._refusal(holder)
            try:
                return self._put_s3_lock(bucket, key, {**me, "heartbeat": clock()}, IfMatch=etag)
            except _ConditionFailed:  # another run replaced the stale lock first, or our own write was retried
                if ours := self._own_s3_lock(bucket, key, me):
                    return ours
                now = self._read_s3_lock(bucket, key)
                raise self._refusal(now[0] if now else holder) from None
        raise self._refusal({})

    def _own_s3_lock(self, bucket: str, key: str, me: dict) -> str | None:
        """The ETag of the LOCK object when it holds this run's token, else None. A conditional write whose answer
        was lost (a timeout, an unreadable response) is retried by the S3 client with the same condition: the
        first try changed the object, so the retry fails its condition although no other run wrote it."""
        current = self._read_s3_lock(bucket, key)
        if current is not None and current[0].get("token") == me["token"]:
            return current[1]
        return None

    @contextmanager
    def _remote_lock(self, held: HeldLock, stale_after_s: float, clock: Callable[[], float]):
        if "s3" not in _protocols(self.fs):
            raise LockUnsupported(
                f"{self.url}: a run lock on this store needs atomic conditional writes, which only S3 "
                "(If-None-Match / If-Match) gives here; keep the shards on s3://… or on a path every node mounts")
        bucket, key, _ = self.fs.split_path(f"{self.root}/LOCK")
        etag = [self._take_s3_lock(bucket, key, held, stale_after_s, clock)]
        stop = threading.Event()

        def renew() -> None:
            try:
                etag[0] = self._put_s3_lock(bucket, key, {**held.info, "heartbeat": clock()}, IfMatch=etag[0])
            except _ConditionFailed:
                ours = self._own_s3_lock(bucket, key, held.info)  # our renewal landed, its answer was lost
                if ours is None:
                    raise
                etag[0] = ours

        def heartbeat() -> None:
            last_ok = clock()
            try:
                while not stop.wait(stale_after_s / 5):
                    try:
                        renew()
                        last_ok = clock()
                    except _ConditionFailed:
                        now = self._read_s3_lock(bucket, key)
                        held.lose("another run holds the lock now" + (f" ({_holder_text(now[0])})" if now else "")
                                  + ": this run's heartbeat was late or its lock was removed")
                        return
                    except Exception as e:  # S3 unreachable: keep trying while the lock cannot yet go stale
                        log.warning("shard lock %s: heartbeat failed (%s: %s); retrying", self.url,
                                    type(e).__name__, e)
                        if clock() - last_ok >= stale_after_s / 2:
                            held.lose(f"the heartbeat failed for {clock() - last_ok:.0f} s ({type(e).__name__}: "
                                      f"{e}); another run may take the lock after {stale_after_s:.0f} s")
                            return
            except BaseException as e:  # never a silent death: the run stops paying
                held.lose(f"the heartbeat thread failed ({type(e).__name__}: {e})")
                raise
        thread = threading.Thread(target=heartbeat, name="shard-lock-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            if held.lost is None:
                try:
                    self._s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag[0])  # only our own version
                except Exception as e:
                    if _s3_failure(e) not in ("precondition", "missing", "conflict"):
                        raise
                self.fs.invalidate_cache(self.root)


class _ConditionFailed(Exception):
    """A conditional write found the object changed (or gone, or being written) since it was read."""


class LockUnsupported(RuntimeError):
    """The store cannot hold a run lock atomically."""


def _protocols(fs) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def _heartbeat(holder: dict) -> float:
    try:
        return float(holder.get("heartbeat", 0))
    except (TypeError, ValueError):
        return 0.0  # no readable heartbeat: stale


def _s3_failure(error: BaseException) -> str | None:
    """'precondition' (412), 'conflict' (409: a concurrent conditional write), 'missing' (404) or None, from an
    s3fs error (which keeps botocore's ClientError as its cause)."""
    seen = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "412") or status == 412:
                return "precondition"
            if code in ("ConditionalRequestConflict", "409") or status == 409:
                return "conflict"
            if code in ("NoSuchKey", "404") or status == 404:
                return "missing"
        seen = seen.__cause__ or seen.__context__
    return "missing" if isinstance(error, FileNotFoundError) else None
