"""The shard store's run lock on S3 (a moto server): conditional writes decide every race, and a run that loses
its lock knows it."""
import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack

import boto3
import pytest

from components.distill.shards import LockHeld, ShardStore

BUCKET = "s1flow-locks"


@pytest.fixture(scope="module")
def bucket():
    """One moto S3 server for the module; credentials and endpoint through the environment, as in production."""
    from tests.support.services import moto_bucket
    with pytest.MonkeyPatch.context() as mp, moto_bucket(mp, BUCKET):
        yield


def _url() -> str:
    return f"s3://{BUCKET}/distill/{uuid.uuid4().hex[:8]}"


def _lock_object(url: str) -> dict:
    key = url.removeprefix(f"s3://{BUCKET}/") + "/LOCK"
    return json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _put_lock_object(url: str, body: dict) -> None:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=url.removeprefix(f"s3://{BUCKET}/") + "/LOCK",
                                  Body=json.dumps(body).encode())


def _just_before_a_lock_write(store: ShardStore, other_run, when=lambda kw: True) -> None:
    """Run ``other_run`` (another run taking the lock) right before ``store``'s first write of the LOCK object
    for which ``when(put_object kwargs)`` holds reaches S3: the tightest interleaving two runs can have."""
    fired = []

    def due(method, kw) -> bool:
        if method == "put_object" and str(kw.get("Key", "")).endswith("/LOCK") and when(kw) and not fired:
            fired.append(1)
            return True
        return False
    sync_call, async_call = store.fs.call_s3, store.fs._call_s3

    def call_s3(method, *args, **kw):
        merged = {k: v for a in args if isinstance(a, dict) for k, v in a.items()} | kw
        if due(method, merged):
            other_run()
        return sync_call(method, *args, **kw)

    async def _call_s3(method, *args, **kw):
        if due(method, kw):
            await asyncio.to_thread(other_run)
        return await async_call(method, *args, **kw)
    store.fs.call_s3, store.fs._call_s3 = call_s3, _call_s3


def test_a_run_that_found_no_lock_cannot_take_one_created_meanwhile(bucket):
    url = _url()
    first, second = ShardStore(url), ShardStore(url)
    with ExitStack() as held:
        winner = []
        _just_before_a_lock_write(second, lambda: winner.append(held.enter_context(first.lock())))
        with pytest.raises(LockHeld, match="in use by another run"):
            with second.lock():
                pass
        assert winner and _lock_object(url)["token"] == winner[0].info["token"]


def test_two_runs_replacing_the_same_stale_lock_only_one_wins(bucket):
    url = _url()
    _put_lock_object(url, {"host": "gone-node", "pid": 1, "heartbeat": time.time() - 3600, "token": "dead"})
    first, second = ShardStore(url), ShardStore(url)
    with ExitStack() as held:
        winner = []
        _just_before_a_lock_write(second, lambda: winner.append(held.enter_context(first.lock())),
                                  when=lambda kw: kw.get("IfNoneMatch") is None)  # its takeover, not a create
        with pytest.raises(LockHeld, match="in use by another run"):
            with second.lock():
                pass
        assert winner and _lock_object(url)["token"] == winner[0].info["token"]


def test_a_live_holder_is_refused_a_stale_or_dead_one_taken_over_and_the_lock_released(bucket):
    url = _url()
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    store = ShardStore(url)
    with store.lock(stale_after_s=60, clock=clock):
        with pytest.raises(LockHeld, match="in use by another run"):
            with ShardStore(url).lock(stale_after_s=60, clock=clock):
                pass
        now[0] += 61  # the holder stopped beating (its machine died): stale
        with ShardStore(url).lock(stale_after_s=60, clock=clock) as me:
            assert _lock_object(url)["token"] == me.info["token"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _put_lock_object(url, {"host": socket.gethostname(), "pid": dead.pid, "heartbeat": now[0], "token": "x"})
    with ShardStore(url).lock(stale_after_s=60, clock=clock):  # same host, holder process gone
        pass
    assert not store.fs.exists(f"{store.root}/LOCK")  # released on exit


def test_a_holder_whose_lock_is_taken_knows_it_at_its_next_heartbeat(bucket):
    url = _url()
    reasons = []
    with ShardStore(url).lock(stale_after_s=0.5) as held:
        held.on_lost(reasons.append)
        _put_lock_object(url, {"host": "other", "pid": 7, "heartbeat": time.time(), "token": "thief"})
        deadline = time.time() + 10
        while held.lost is None and time.time() < deadline:
            time.sleep(0.05)
        assert held.lost and "another run holds the lock now (pid 7 on other" in held.lost
        assert reasons == [held.lost]
        from components.distill.shards import LockLost
        with pytest.raises(LockLost, match="lost its lock"):
            held.check()
    assert _lock_object(url)["token"] == "thief"  # the loser does not delete the winner's lock


def test_a_failing_heartbeat_is_logged_and_ends_the_hold_before_the_lock_can_go_stale(bucket, caplog):
    url = _url()
    store = ShardStore(url)
    with store.lock(stale_after_s=1.0) as held:
        real = store.fs._call_s3

        async def unreachable(method, *args, **kw):
            if method == "put_object":
                raise ConnectionError("S3 endpoint unreachable")
            return await real(method, *args, **kw)
        store.fs._call_s3 = unreachable
        with caplog.at_level(logging.WARNING, logger="components.distill.shards"):
            deadline = time.time() + 10
            while held.lost is None and time.time() < deadline:
                time.sleep(0.05)
        assert held.lost and "heartbeat failed" in held.lost and "S3 endpoint unreachable" in held.lost
        assert any("heartbeat failed" in r.getMessage() for r in caplog.records)
        assert any("shard lock lost" in r.getMessage() for r in caplog.records)


def test_a_store_without_conditional_writes_refuses_to_lock():
    from components.distill.shards import LockUnsupported
    with pytest.raises(LockUnsupported, match="conditional writes.*s3://"):
        with ShardStore(f"memory://locks-{uuid.uuid4().hex}").lock():
            pass


def _answer_lost_then_retried(store: ShardStore, when) -> list:
    """The first LOCK write for which ``when(put_object kwargs)`` holds reaches S3 and lands, but its answer is
    lost: the S3 client sends it again with the same condition (what s3fs and botocore do on a timeout or an
    unreadable response), and the caller gets the retry's answer."""
    fired = []
    real = store.fs._call_s3

    async def _call_s3(method, *args, **kw):
        if method == "put_object" and str(kw.get("Key", "")).endswith("/LOCK") and when(kw) and not fired:
            fired.append(kw.get("IfMatch") or kw.get("IfNoneMatch"))
            await real(method, *args, **kw)  # lands on S3; its answer never reaches the caller
        return await real(method, *args, **kw)
    store.fs._call_s3 = _call_s3
    return fired


def test_a_renewal_retried_after_its_answer_was_lost_keeps_the_lock(bucket):
    url = _url()
    store = ShardStore(url)
    fired = _answer_lost_then_retried(store, when=lambda kw: "IfMatch" in kw)  # the first renewal
    with store.lock(stale_after_s=0.5) as held:
        deadline = time.time() + 10
        while (not fired or _lock_object(url)["heartbeat"] <= held.info["started"] + 0.3) and time.time() < deadline:
            time.sleep(0.05)
        assert fired and held.lost is None  # renewals after the retried one go on with the adopted ETag
        assert _lock_object(url)["token"] == held.info["token"]
    assert not store.fs.exists(f"{store.root}/LOCK")  # released with the ETag it adopted


def test_a_takeover_retried_after_its_answer_was_lost_holds_the_lock(bucket):
    url = _url()
    _put_lock_object(url, {"host": "gone-node", "pid": 1, "heartbeat": time.time() - 3600, "token": "dead"})
    store = ShardStore(url)
    fired = _answer_lost_then_retried(store, when=lambda kw: "IfMatch" in kw)  # the takeover of the stale lock
    with store.lock() as held:
        assert fired and held.lost is None
        assert _lock_object(url)["token"] == held.info["token"]
