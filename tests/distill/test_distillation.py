"""Distillation against a local fault-injecting teacher: done or recorded-failed, exactly once, resumable."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from components.common.network import free_port
from components.config import PoolConfig, TeacherConfig
from components.data.pool import generate_pool
from components.distill.distillation import distill_pool, max_lost_on_kill, merged_traces, teacher_fingerprint
from components.distill.shards import ShardStore
from components.distill.teachers.simulator import Simulator
from tests.conftest import REPO
from tests.support.micro import write_micro_project


def _teacher(sim: Simulator, **kw) -> TeacherConfig:
    base = dict(kind="vllm", model="sim-teacher", base_url=sim.base_url, concurrency=8, workers=2, batch_size=8,
                timeout_s=1.0, max_retries=1, backoff_base_s=0.05, price_input_per_mtok=1.0, price_output_per_mtok=2.0)
    return TeacherConfig(**{**base, **kw})


def _ok_rows_per_id(store: ShardStore) -> Counter:
    return Counter(r["question_id"] for r in store.rows() if r["ok"])


def test_faults_end_done_or_failed_and_a_second_run_finishes_them(tmp_path):
    questions = generate_pool(PoolConfig(size=160, seed=21, malformed_fraction=0.0))
    shard_dir = tmp_path / "shards"
    with Simulator(free_port(), fault_rate=0.10, seed=3) as sim:
        first = distill_pool(questions, _teacher(sim), shard_dir)
        stats = sim.stats()
    assert set(stats["faults"]) == {"429", "500", "hang", "malformed"}
    assert first["done"] + first["failed"] == 160 and first["missing"] == 0 and first["failed"] > 0
    store = ShardStore(shard_dir)
    failed = {k for k, r in store.latest().items() if not r["ok"]}
    assert all(r["error"] for r in store.latest().values() if not r["ok"])
    malformed = [r for r in store.latest().values() if "malformed" in r["error"]]
    assert all(r["raw"].startswith('{"choices"') for r in malformed)  # raw text kept
    assert first["cost_usd"] > 0 and first["calls"] == stats["calls"]
    with Simulator(free_port()) as sim:  # the provider recovered
        second = distill_pool(questions, _teacher(sim), shard_dir)
        asked = Counter(sim.stats()["by_question"])
    assert second["skipped_done"] == 160 - len(failed) and second["attempted"] == len(failed)
    assert second["done"] == 160 and second["failed"] == 0
    assert set(asked) == {q.question for q in questions if q.id in failed}  # only the failed ones were asked
    assert max(_ok_rows_per_id(store).values()) == 1  # never a duplicate
    traces = merged_traces(questions, shard_dir)
    assert [t.question_id for t in traces] == [q.id for q in questions] and all(t.ok for t in traces)


def test_teacher_fingerprint_ignores_limits_but_not_the_model():
    a = TeacherConfig(kind="openai", model="a", concurrency=4)
    assert teacher_fingerprint(a) == teacher_fingerprint(a.model_copy(update={"concurrency": 64, "workers": 4}))
    assert teacher_fingerprint(a) != teacher_fingerprint(a.model_copy(update={"model": "b"}))


def _s1flow(*args) -> list[str]:
    return [str(Path(sys.executable).parent / "s1flow"), *args]


@pytest.mark.slow
def test_sigkill_mid_run_keeps_finished_work_and_never_duplicates(tmp_path):
    pytest.importorskip("prefect")
    project = write_micro_project(tmp_path / "proj")
    env = {**os.environ, "S1FLOW_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(_s1flow("stage", "collect"), cwd=project, env=env, check=True, capture_output=True)
    pool = [json.loads(line) for line in (project / "data/micro/pool.jsonl").read_text().splitlines()]
    with Simulator(free_port(), latency_ms=300) as sim:
        overrides = ["-s", "teacher.kind=vllm", "-s", f"teacher.base_url={sim.base_url}", "-s", "teacher.batch_size=4",
                     "-s", "teacher.concurrency=4", "-s", "teacher.workers=1"]
        proc = subprocess.Popen(_s1flow("stage", "distill", *overrides), cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        shards = lambda: list((project / "runs/micro/distill").glob("*/shard-*.jsonl"))  # noqa: E731
        deadline = time.time() + 600  # a safety net only: Ray's start-up on a loaded 2-core machine can take minutes
        while len(shards()) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = {json.loads(line)["question_id"] for p in shards() for line in p.read_text().splitlines()}
        assert 3 * 4 <= len(kept) < len(pool)  # killed mid-run with work on disk
        assert not (project / "data/micro/traces.jsonl").exists()
        done = subprocess.run(_s1flow("stage", "distill", *overrides), cwd=project, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        asked = Counter(sim.stats()["by_question"])
    report = json.loads((project / "metrics/micro/distill_report.json").read_text())
    assert report["skipped_done"] >= len(kept) and report["done"] == len(pool)
    text_of = {q["id"]: q["question"] for q in pool}
    assert all(asked[text_of[qid]] == 1 for qid in kept)  # finished work was not redone
    lost = sum(asked.values()) - len(pool)
    cfg = TeacherConfig(kind="vllm", base_url=sim.base_url, batch_size=4, concurrency=4, workers=1)
    assert 0 <= lost <= max_lost_on_kill(cfg) == 8  # at most the batches in flight at the kill
    traces = [json.loads(line) for line in (project / "data/micro/traces.jsonl").read_text().splitlines()]
    assert sorted(t["question_id"] for t in traces) == sorted(q["id"] for q in pool) and all(t["ok"] for t in traces)
    store = ShardStore(next((project / "runs/micro/distill").iterdir()))
    assert max(_ok_rows_per_id(store).values()) == 1


# --- exactly once for money: isolation, spend cap, lock ---

def _worker(cfg: TeacherConfig, shard_dir, **kw):
    from components.distill.distillation import TeacherWorker
    return TeacherWorker(cfg.model_dump_json(), str(shard_dir), **kw)


def _batch(questions) -> dict:
    return {"question": [q.model_dump_json() for q in questions]}


def test_one_bad_response_fails_only_its_question_and_the_batch_is_kept(tmp_path):
    """A usage field of the wrong type (an error that is not the client's ApiError on main) must not abort
    the batch and drop the answers already paid for: it is one recorded failure with the raw text."""
    import asyncio
    questions = generate_pool(PoolConfig(size=24, seed=5, malformed_fraction=0.0))
    with Simulator(free_port(), fault_rate=0.3, seed=1, faults=("bad_usage",)) as sim:
        out = asyncio.run(_worker(_teacher(sim, workers=1, concurrency=8), tmp_path)(_batch(questions)))
        assert sim.stats()["faults"]["bad_usage"] > 0
    rows = list(ShardStore(tmp_path).rows())
    assert len(rows) == 24 and len(out["status"]) == 24  # the whole batch is on disk
    bad = [r for r in rows if not r["ok"]]
    assert bad and all("usage" in r["error"] and '"usage": "n/a"' in r["raw"] for r in bad)
    assert sum(s == "done" for s in out["status"]) == 24 - len(bad) > 0


def test_a_teacher_that_raises_loses_only_that_question(tmp_path):
    import asyncio

    from components.records import Trace
    questions = generate_pool(PoolConfig(size=6, seed=5, malformed_fraction=0.0))

    class Flaky:
        name = "flaky"

        async def attempt(self, q):
            if q.id == questions[2].id:
                raise RecursionError("too deep")
            return Trace(question_id=q.id, teacher="flaky", thinking="t", answer="a", prompt_tokens=3)
    worker = _worker(TeacherConfig(), tmp_path)
    worker.teacher = Flaky()
    out = asyncio.run(worker(_batch(questions)))
    assert list(out["status"]) == ["done", "done", "failed", "done", "done", "done"]
    failed = ShardStore(tmp_path).latest()[questions[2].id]
    assert "RecursionError: too deep" in failed["error"] and failed["raw"]


def test_spend_cap_stops_cleanly_and_a_rerun_with_a_higher_cap_continues(tmp_path):
    """teacher.max_cost_usd: the run stops asking once the cap is spent (never past it: each call reserves its
    worst case, max_tokens of output, before it leaves), what is done is kept, the stage refuses to write
    partial traces, and a rerun under a raised cap asks exactly the questions left, each once. Failed attempts
    that were billed count."""
    from components.distill.distill_stage import distill_stage
    from components.distill.distillation import CostCapReached, cost_usd
    from components.paths import Paths
    from components.records import write_jsonl
    paths = Paths.for_profile("micro", tmp_path)
    questions = generate_pool(PoolConfig(size=96, seed=8, malformed_fraction=0.0))
    write_jsonl(paths.pool, questions)
    price = dict(price_input_per_mtok=1000.0, price_output_per_mtok=2000.0)  # ~0.08 USD a question, ~7.8 for all
    with Simulator(free_port(), fault_rate=0.2, seed=2, faults=("billed_malformed",)) as sim:
        capped = _teacher(sim, concurrency=4, workers=2, batch_size=8, max_cost_usd=3.0, max_tokens=400,
                          **price)  # worst case ~1.1 USD a call: about two fit in flight at once
        with pytest.raises(CostCapReached, match=r"max_cost_usd=\$3 reached.*Raise teacher.max_cost_usd"):
            distill_stage(capped, paths)
        first = json.loads(paths.metric("distill_report.json").read_text())
        asked_first = Counter(sim.stats()["by_question"])
        store = ShardStore(paths.distill_shards(teacher_fingerprint(capped)))
        rows = list(store.rows())
        assert first["stopped_at_cost_cap"] and first["unasked"] > 0 and first["done"] > 0
        assert 3.0 - 2 * 1.2 <= first["cost_usd"] <= first["spent_usd"] <= 3.0  # calls in flight count too
        assert first["cost_usd"] == pytest.approx(sum(cost_usd(r, capped) for r in rows), abs=1e-5)
        billed_failures = [r for r in rows if not r["ok"] and r["completion_tokens"] > 0]
        assert billed_failures  # a failed but billed attempt is counted, not 0
        assert not paths.traces.exists()
        from components.distill.distillation import distill_pool
        same_cap = distill_pool(questions, capped, store.url)  # only calls whose worst case fits what is left
        assert same_cap["stopped_at_cost_cap"] and same_cap["spent_usd"] <= 3.0
        raised = capped.model_copy(update={"max_cost_usd": 10_000.0, "max_retries": 3})
        second = distill_stage(raised, paths)  # same fingerprint: limits and caps do not change the teacher
        asked_second = Counter(sim.stats()["by_question"]) - asked_first
    done_first = {r["question_id"] for r in rows if r["ok"]}
    assert set(asked_second) == {q.question for q in questions if q.id not in done_first}
    assert not second["stopped_at_cost_cap"] and second["done"] + second["failed"] == 96
    assert max(_ok_rows_per_id(store).values()) == 1
    assert second["spent_before_usd"] == pytest.approx(same_cap["spent_usd"], abs=1e-5)


def test_a_second_run_over_the_same_shards_refuses_and_a_dead_holder_does_not_block(tmp_path):
    from components.distill.shards import LockHeld
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom components.distill.shards import ShardStore\n"
         "with ShardStore(sys.argv[1]).lock():\n    print('held', flush=True)\n    time.sleep(600)\n", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        questions = generate_pool(PoolConfig(size=4, seed=1))
        with pytest.raises(LockHeld, match=rf"in use by another run \(pid {holder.pid} on .*both pay"):
            distill_pool(questions, TeacherConfig(), tmp_path)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the LOCK file stays behind
        holder.wait()
    assert (tmp_path / "LOCK").exists()
    with ShardStore(tmp_path).lock() as me:  # the kernel released the dead holder's lock
        assert me.info["pid"] == os.getpid()


class _Remote:
    """A Ray actor method as the worker calls it: ``await method.remote(*args)``."""

    def __init__(self, fn):
        self.fn = fn

    async def remote(self, *a):
        return self.fn(*a)


class _Ledger:
    """A stand-in for the run's SpendLedger actor (the real ledger behind ``.remote`` methods), with a booking
    that can fail and a stop switch."""

    def __init__(self, left=None, fail_spend=False):
        from components.distill.distillation import SpendLedger
        self.real, self.fail_spend, self.stopped, self.booked = SpendLedger(left), fail_spend, None, []
        self.state, self.spend = _Remote(self._state), _Remote(self._spend)
        self.reserve, self.settle = _Remote(self._reserve), _Remote(self.real.settle)

    def _state(self):
        left, _, in_flight = self.real.state()
        return left, self.stopped, in_flight

    def _reserve(self, worst):
        if self.stopped:
            return False, self.stopped, self.real.state()[2]
        return self.real.reserve(worst)

    def _spend(self, usd):
        if self.fail_spend:
            raise RuntimeError("ledger actor died")
        self.booked.append(usd)
        self.real.spend(usd)


def test_a_ledger_failure_keeps_the_paid_batch_and_the_worker_stops_paying(tmp_path):
    """A booking that fails (the ledger actor died) must not lose the answers already paid for: the batch is
    written, and the worker asks nothing more (it cannot enforce the cap without its ledger)."""
    import asyncio
    questions = generate_pool(PoolConfig(size=12, seed=5, malformed_fraction=0.0))
    cfg = TeacherConfig(price_input_per_mtok=1000.0, price_output_per_mtok=1000.0)  # the embedded teacher, priced
    worker = _worker(cfg, tmp_path, ledger=_Ledger(left=100.0, fail_spend=True))
    first = asyncio.run(worker(_batch(questions[:6])))
    answered = [q.id for q, s in zip(questions, first["status"]) if s == "done"]
    assert answered and list(first["status"]) == ["done"] * len(answered) + ["unasked"] * (6 - len(answered))
    assert sorted(r["question_id"] for r in ShardStore(tmp_path).rows()) == sorted(answered)  # none lost
    second = asyncio.run(worker(_batch(questions[6:])))
    assert list(second["status"]) == ["unasked"] * 6


def test_a_timed_out_call_counts_at_its_worst_case_in_the_next_runs_cap(tmp_path):
    """A call that times out may still be billed in full: the journal books it at max_tokens of output (and
    the request's bytes as prompt) and the next run starts from that, not from $0 in the shards."""
    import asyncio

    from components.distill.journal import replay
    questions = generate_pool(PoolConfig(size=4, seed=7, malformed_fraction=0.0))
    with Simulator(free_port(), fault_rate=1.0, faults=("hang",)) as sim:
        cfg = _teacher(sim, workers=1, concurrency=4, timeout_s=0.3, max_retries=0, max_tokens=1000,
                       price_input_per_mtok=0.0, price_output_per_mtok=1000.0)  # $1 per attempt at worst
        out = asyncio.run(_worker(cfg, tmp_path)(_batch(questions)))
        assert list(out["status"]) == ["failed"] * 4
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in ShardStore(tmp_path).rows()) == 0
        journal = replay(ShardStore(tmp_path))
        assert journal.unsettled == 4 and journal.spent_usd == pytest.approx(4.0)
        calls = sim.stats()["calls"]
        capped = cfg.model_copy(update={"max_cost_usd": 3.5})
        report = distill_pool(questions, capped, tmp_path)  # the cap is spent already: nothing is asked
        assert report["stopped_at_cost_cap"] and report["spent_before_usd"] == pytest.approx(4.0)
        assert report["unsettled_calls_before"] == 4 and sim.stats()["calls"] == calls


def test_a_run_told_to_stop_makes_no_further_attempt_not_even_a_retry(tmp_path):
    """Once the ledger says stop (the shard lock was lost), the next paid HTTP attempt is refused: a
    question being retried is not retried (it is not asked, not failed), and no new question starts."""
    import asyncio
    questions = generate_pool(PoolConfig(size=3, seed=9, malformed_fraction=0.0))
    with Simulator(free_port(), fault_rate=1.0, faults=("500",)) as sim:
        ledger = _Ledger()
        cfg = _teacher(sim, workers=1, concurrency=1, max_retries=3, backoff_base_s=0.01)
        worker = _worker(cfg, tmp_path, ledger=ledger)
        reserve = ledger.reserve.fn

        def grant_then_lose_the_lock(worst):  # the first attempt goes out, then the lock is lost
            granted = reserve(worst)
            ledger.stopped = "the run lost its shard lock: another run holds the lock now"
            return granted
        ledger.reserve.fn = grant_then_lose_the_lock
        out = asyncio.run(worker(_batch(questions)))
        assert sim.stats()["calls"] == 1
    assert list(out["status"]) == ["unasked"] * 3
    row = ShardStore(tmp_path).latest()[questions[0].id]
    assert not row["ok"] and row["error"].startswith("not asked: ") and "lost its shard lock" in row["error"]
    assert row["attempts"] == 1


# --- the cap counts calls in flight; a refused retry keeps what was billed ---

def _mock_teacher(worker, handler) -> None:
    """Point ``worker``'s metered teacher at an in-process handler (httpx.MockTransport) instead of a server."""
    import httpx

    from components.distill.journal import MeteredTransport
    from components.distill.teachers import build_teacher
    worker.teacher = build_teacher(worker.cfg, transport=MeteredTransport(
        worker.cfg, worker.journal, worker._gate, worker._book, inner=httpx.MockTransport(handler)))


def _mock_cfg(**kw) -> TeacherConfig:
    # no input price: every attempt's worst case is max_tokens of output, the same for every question
    base = dict(kind="vllm", model="m", base_url="http://teacher.test/v1", concurrency=12, workers=1, batch_size=12,
                max_tokens=100, max_retries=2, backoff_base_s=0.001, price_input_per_mtok=0.0,
                price_output_per_mtok=10_000.0)
    return TeacherConfig(**{**base, **kw})


def _answer(completion_tokens=None, status=200):
    import json as _json

    import httpx
    body = {"choices": [{"message": {"content": "42", "reasoning_content": "think"}}]}
    if completion_tokens is not None:
        body["usage"] = {"prompt_tokens": 0, "completion_tokens": completion_tokens}
    return httpx.Response(status, content=_json.dumps(body).encode(), headers={"content-type": "application/json"})


def test_concurrent_calls_never_start_past_the_cap_counting_those_in_flight(tmp_path):
    """12 questions at once, a cap of 3 worst cases, every call billed its worst case: exactly 3 calls are made
    (the gate reserves each call's worst case before it leaves), the other 9 are not asked."""
    import asyncio

    import httpx

    from components.distill.journal import replay, worst_case_usd
    cfg = _mock_cfg()
    worst = worst_case_usd(0, cfg)
    calls = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        await asyncio.sleep(0.05)  # every call is in flight while the others try to start
        return _answer()  # a 2xx without usage: billed at its worst case
    questions = generate_pool(PoolConfig(size=12, seed=4, malformed_fraction=0.0))
    worker = _worker(cfg, tmp_path, ledger=_Ledger(left=3 * worst))
    _mock_teacher(worker, handler)
    out = asyncio.run(worker(_batch(questions)))
    assert len(calls) == 3
    assert sorted(out["status"]) == ["done"] * 3 + ["unasked"] * 9
    assert replay(ShardStore(tmp_path)).spent_usd <= 3 * worst + 1e-9


def test_a_call_that_does_not_fit_waits_for_the_calls_in_flight_and_the_cap_holds(tmp_path):
    """Calls billed less than their worst case give the rest back when they settle: more calls than the cap's
    worst cases are made, one after another, and what they cost never passes the cap."""
    import asyncio

    import httpx

    from components.distill.journal import replay, worst_case_usd
    cfg = _mock_cfg()
    worst = worst_case_usd(0, cfg)
    calls = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        await asyncio.sleep(0.02)
        return _answer(completion_tokens=40)  # 0.4 of the worst case
    questions = generate_pool(PoolConfig(size=12, seed=4, malformed_fraction=0.0))
    worker = _worker(cfg, tmp_path, ledger=_Ledger(left=2.5 * worst))
    _mock_teacher(worker, handler)
    out = asyncio.run(worker(_batch(questions)))
    assert len(calls) > 2 and list(out["status"]).count("done") == len(calls)
    assert replay(ShardStore(tmp_path)).spent_usd <= 2.5 * worst + 1e-9


def test_a_question_refused_on_a_retry_is_not_asked_and_keeps_what_its_attempts_were_billed(tmp_path):
    """The first attempt is billed (a 500 reporting usage) and eats the cap; the retry is refused: the question is
    not asked (pending for the next run, counted as the cap's stop), not a failure, and its billed tokens stay
    in the shard rows and in the worker's report."""
    import asyncio

    import httpx

    from components.distill.distillation import _summary, merged_traces
    from components.distill.journal import worst_case_usd
    cfg = _mock_cfg(concurrency=1, batch_size=1)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _answer(completion_tokens=100, status=500)  # retryable, billed its worst case
    questions = generate_pool(PoolConfig(size=1, seed=4, malformed_fraction=0.0))
    worker = _worker(cfg, tmp_path, ledger=_Ledger(left=1.5 * worst_case_usd(0, cfg)))
    _mock_teacher(worker, handler)
    out = asyncio.run(worker(_batch(questions)))
    assert len(calls) == 1
    assert list(out["status"]) == ["unasked"] and list(out["completion_tokens"]) == [100]
    store = ShardStore(tmp_path)
    row = store.latest()[questions[0].id]
    assert row["error"].startswith("not asked: ") and "spend cap" in row["error"]
    assert (row["completion_tokens"], row["attempts"]) == (100, 1)
    summary = _summary(store, questions, cfg)
    assert (summary["done"], summary["failed"], summary["missing"], summary["completion_tokens"]) == (0, 0, 1, 100)
    assert store.done_ids() == set()  # the next run asks it again
    with pytest.raises(RuntimeError, match="no result yet"):
        merged_traces(questions, tmp_path)


def test_the_worker_closes_its_spend_journal(tmp_path):
    worker = _worker(TeacherConfig(), tmp_path)
    fd = worker.journal._fd
    os.fstat(fd)
    worker.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    other = _worker(TeacherConfig(), tmp_path)
    fd = other.journal._fd
    del other  # what Ray Data does to the actor's UDF when the pool shuts down
    import gc
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


# --- a cluster with no shared filesystem: the shards live in a bucket every node reaches ---

NODE = """
import json, sys
from components.config import TeacherConfig
from components.distill.distillation import distill_pool
from components.records import Question, read_jsonl
cfg = TeacherConfig.model_validate_json(sys.argv[1])
print(json.dumps(distill_pool(read_jsonl(sys.argv[2], Question), cfg, sys.argv[3])))
"""


def _on_node(node: Path, cfg: TeacherConfig, questions, url: str) -> dict:
    """A distill run on one "machine": its own process, working directory, temp dir and local Ray; only the
    bucket (moto S3, from the environment) is shared."""
    import shutil
    import tempfile

    from components.records import write_jsonl
    node.mkdir(parents=True, exist_ok=True)
    write_jsonl(node / "questions.jsonl", questions)
    temp = tempfile.mkdtemp(prefix="nd", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": temp, "S1FLOW_NO_PROGRESS": "1"}
    env.pop("RAY_ADDRESS", None)
    try:
        run = subprocess.run([sys.executable, "-c", NODE, cfg.model_dump_json(), str(node / "questions.jsonl"), url],
                             cwd=node, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_two_nodes_sharing_only_the_bucket_never_pay_twice(tmp_path, monkeypatch):
    """Node A answers half the pool into s3://…; node B, with nothing on its disk, asks the teacher only for the
    other half; A, run again over the whole pool, asks for nothing: each sees the other's paid answers."""
    from tests.support.services import moto_bucket
    questions = generate_pool(PoolConfig(size=24, seed=13, malformed_fraction=0.0))
    url = "s3://s1flow-distill/s1-32b/distill/abc123"
    with moto_bucket(monkeypatch, "s1flow-distill"), Simulator(free_port()) as sim:
        cfg = _teacher(sim, concurrency=4, workers=2, batch_size=4, shard_uri="s3://s1flow-distill/s1-32b/distill")
        first = _on_node(tmp_path / "node-a", cfg, questions[:12], url)
        second = _on_node(tmp_path / "node-b", cfg, questions, url)
        third = _on_node(tmp_path / "node-a", cfg, questions, url)
        asked = Counter(sim.stats()["by_question"])
        traces = merged_traces(questions, url)
    assert first["attempted"] == 12 and first["done"] == 12
    assert second["skipped_done"] == 12 and second["attempted"] == 12 and second["done"] == 24
    assert third["skipped_done"] == 24 and third["attempted"] == 0
    assert asked == Counter(q.question for q in questions)  # every question paid for once, over both nodes
    assert [t.question_id for t in traces] == [q.id for q in questions] and all(t.ok for t in traces)
    assert not list((tmp_path / "node-a").rglob("shard-*")) and not list((tmp_path / "node-b").rglob("shard-*"))


def test_a_node_local_shard_dir_on_a_multi_node_cluster_is_refused_before_any_call(tmp_path, monkeypatch):
    import components.distill.distillation as d
    from components.config import ConfigError
    questions = generate_pool(PoolConfig(size=8, seed=3, malformed_fraction=0.0))
    monkeypatch.setattr(d, "ensure_ray", lambda: None)
    monkeypatch.setattr(d, "alive_nodes", lambda: 2)
    with Simulator(free_port()) as sim:
        with pytest.raises(ConfigError, match=r"teacher\.shard_uri: the Ray cluster has 2 nodes.*s3://"):
            distill_pool(questions, _teacher(sim), tmp_path / "runs/s1-32b/distill/abc")
        assert sim.stats()["calls"] == 0
    store = ShardStore(tmp_path / "shared")
    assert d.node_local_shards_problem(store, _teacher(sim, shard_uri=str(tmp_path / "shared")), 2) is None  # a mount
    assert d.node_local_shards_problem(store, _teacher(sim), 1) is None  # one machine
    assert d.node_local_shards_problem(ShardStore("memory://bucket/x"), _teacher(sim), 2) is None


def test_the_s1_32b_profile_keeps_its_shards_in_a_bucket():
    from components.config import load_config
    teacher = load_config(REPO / "params.yaml", "s1-32b").teacher
    assert teacher.shard_uri and teacher.shard_uri.startswith("s3://")
