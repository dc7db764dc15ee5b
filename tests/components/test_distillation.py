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
from tests.micro import write_micro_project


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
    pool = [json.loads(line) for line in (project / "data/tiny/pool.jsonl").read_text().splitlines()]
    with Simulator(free_port(), latency_ms=300) as sim:
        overrides = ["-s", "teacher.kind=vllm", "-s", f"teacher.base_url={sim.base_url}", "-s", "teacher.batch_size=4",
                     "-s", "teacher.concurrency=4", "-s", "teacher.workers=1"]
        proc = subprocess.Popen(_s1flow("stage", "distill", *overrides), cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        shards = lambda: list((project / "runs/tiny/distill").glob("*/shard-*.jsonl"))  # noqa: E731
        deadline = time.time() + 120
        while len(shards()) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = {json.loads(line)["question_id"] for p in shards() for line in p.read_text().splitlines()}
        assert 3 * 4 <= len(kept) < len(pool)  # killed mid-run with work on disk
        assert not (project / "data/tiny/traces.jsonl").exists()
        done = subprocess.run(_s1flow("stage", "distill", *overrides), cwd=project, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        asked = Counter(sim.stats()["by_question"])
    report = json.loads((project / "metrics/tiny/distill_report.json").read_text())
    assert report["skipped_done"] >= len(kept) and report["done"] == len(pool)
    text_of = {q["id"]: q["question"] for q in pool}
    assert all(asked[text_of[qid]] == 1 for qid in kept)  # finished work was not redone
    lost = sum(asked.values()) - len(pool)
    cfg = TeacherConfig(kind="vllm", base_url=sim.base_url, batch_size=4, concurrency=4, workers=1)
    assert 0 <= lost <= max_lost_on_kill(cfg) == 8  # at most the batches in flight at the kill
    traces = [json.loads(line) for line in (project / "data/tiny/traces.jsonl").read_text().splitlines()]
    assert sorted(t["question_id"] for t in traces) == sorted(q["id"] for q in pool) and all(t["ok"] for t in traces)
    store = ShardStore(next((project / "runs/tiny/distill").iterdir()))
    assert max(_ok_rows_per_id(store).values()) == 1
