"""The rehearsal driver: a hung stage is killed and reported as failed, a kill that never happened fails its
check, and what was billed is read only once the killed stage's workers are gone and held calls have billed.
The stages are stand-in scripts; nothing here starts Ray or a service."""
import json
import os
import stat
import time
from pathlib import Path

import pytest

import infra.rehearsal.run as run
from components.paths import Paths
from infra.rehearsal.provider import question_key


class FakeServices:
    """What the driver reads of the services: the bin dir with ``s1flow``, the env, and the Ray processes by
    title (scripted: ``alive[title]`` lists, per poll, the pids still up)."""

    def __init__(self, bin_dir: Path, alive: dict[str, list[list[int]]] | None = None):
        self.bin, self.env, self.alive, self.polls = bin_dir, dict(os.environ), alive or {}, []

    def process_pids(self, title: str, node: int) -> list[int]:
        self.polls.append((time.monotonic(), title, node))
        left = self.alive.get(title)
        return (left.pop(0) if len(left) > 1 else left[0]) if left and node == 0 else []


def _s1flow(tmp_path: Path, body: str) -> Path:
    """A stand-in ``s1flow`` whose behaviour is ``body`` (shell)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "s1flow"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _driver(tmp_path: Path, services: FakeServices, pool_rows: int = 10, **kw) -> run.Driver:
    paths = Paths.for_profile(run.PROFILE, tmp_path)
    paths.pool.parent.mkdir(parents=True, exist_ok=True)
    paths.pool.write_text("".join(json.dumps({"id": f"q{i}", "question": f" What is {i} + 1?\n"}) + "\n"
                                  for i in range(pool_rows)))
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return run.Driver(services, logs, paths=paths, **kw)


def _gone(pid: int, wait_s: float = 5.0) -> bool:
    """Whether ``pid`` has ended (a zombie left for its new parent to reap counts as ended)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


def test_a_stage_past_its_time_limit_is_killed_with_its_group_and_reported_failed(tmp_path):
    pid_file = tmp_path / "child.pid"
    bin_dir = _s1flow(tmp_path, f"sleep 60 & echo $! > {pid_file}; wait")
    driver = _driver(tmp_path, FakeServices(bin_dir), stage_timeout_s=1)
    start = time.monotonic()
    rc, tail = driver.run_stage("filter")
    assert rc == run.TIMED_OUT and "killed after 1 s (its time limit)" in tail and time.monotonic() - start < 20
    assert _gone(int(pid_file.read_text()))  # the stage's children go with it
    rc, tail, note, _ = run.checked_stage(driver, "filter", 0.4)
    assert rc == run.TIMED_OUT and note == "timed out"


def test_a_distill_that_ends_before_the_kill_fails_as_not_exercised(tmp_path, monkeypatch):
    driver = _driver(tmp_path, FakeServices(_s1flow(tmp_path, "exit 0")))
    monkeypatch.setattr(driver, "_done_texts", lambda shard_dir: set())
    monkeypatch.setattr(run, "provider", lambda path: pytest.fail("nothing was killed: nothing to read"))
    rc, tail, note, checks = run.checked_stage(driver, "distill", 0.4)
    assert rc == 1 and note.startswith("kill not exercised") and "it ended (exit status 0) first" in tail
    assert checks["distill_kill"]["killed"] is False


def test_a_train_with_no_worker_on_node_2_fails_as_not_exercised(tmp_path, monkeypatch):
    driver = _driver(tmp_path, FakeServices(_s1flow(tmp_path, "exit 0")))
    monkeypatch.setattr(driver, "train_with_kill", lambda: (0, "trained", {"killed": None}))
    rc, tail, note, checks = run.checked_stage(driver, "train", 0.4)
    assert rc == 1 and note == "kill not exercised" and "no RayTrainWorker ran on node 2" in tail
    assert run.checked_stage(driver, "train", 0.4, train_kill=False)[0] == 0  # asked not to kill: a plain run


def test_an_error_reading_the_record_kills_the_stage_and_fails_it(tmp_path, monkeypatch):
    pid_file = tmp_path / "stage.pid"
    driver = _driver(tmp_path, FakeServices(_s1flow(tmp_path, f"echo $$ > {pid_file}; sleep 60")))

    def unreadable(shard_dir):
        if pid_file.exists() and pid_file.read_text().strip():
            raise OSError("the bucket cannot be read")
        return set()
    monkeypatch.setattr(driver, "_done_texts", unreadable)
    rc, tail, _, _ = run.checked_stage(driver, "distill", 0.4)
    assert rc == 1 and "OSError: the bucket cannot be read" in tail
    assert _gone(int(pid_file.read_text()))


def test_the_bill_is_read_after_the_workers_are_gone_and_held_calls_have_billed(tmp_path, monkeypatch):
    """The stage is SIGKILLed at 40% on record; its TeacherWorker actors (outside its process group) stay up for
    three more polls; /billed and the record are read only after they are gone and the hold time has passed,
    and the rerun's bills are compared on the same keys the provider uses."""
    marker = tmp_path / "ran-once"
    bin_dir = _s1flow(tmp_path, f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; sleep 60")
    services = FakeServices(bin_dir, {"TeacherWorker": [[4242], [4242], [4242], []]})
    driver = _driver(tmp_path, services, hold_s=0.6)
    done = {question_key(f" What is {i} + 1?\n") for i in range(5)}
    monkeypatch.setattr(driver, "_done_texts", lambda shard_dir: done if marker.exists() else set())
    reads = []

    def provider(path):
        assert path == "/billed"
        reads.append(time.monotonic())
        return {k: 1 for k in done}
    monkeypatch.setattr(run, "provider", provider)
    rc, tail, note, checks = run.checked_stage(driver, "distill", 0.4)
    check = checks["distill_kill"]
    assert rc == 0 and check["killed"] and check["done_at_kill"] == 5 and check["paid_again_for_recorded"] == 0
    gone_at = max(t for t, title, node in services.polls if title == "TeacherWorker")
    assert len(reads) == 2 and reads[0] - gone_at > 0.6  # after the last poll that found them, plus the hold
    assert check["workers_killed_after_kill"] == [] and note.startswith("SIGKILL at 5/10 done")


def test_the_driver_and_the_provider_key_a_question_alike(tmp_path):
    """The teacher sends the pool's question as it is (spaces included); the provider bills it under
    question_key of what was sent, the driver reads the record under question_key of the pool's text."""
    from components.distill.shards import ShardStore
    driver = _driver(tmp_path, FakeServices(tmp_path))
    shards = tmp_path / "shards"
    ShardStore(shards).write([{"question_id": "q3", "teacher": "t", "ok": True, "thinking": "x", "answer": "4"}])
    assert driver._done_texts(shards) == {question_key(" What is 3 + 1?\n")}
    assert question_key(" What is 3 + 1?\n") == question_key("What is 3 + 1?")
