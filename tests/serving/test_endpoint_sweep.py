"""The evaluation sweep against the Serve endpoint: grading, scoring, and resuming after a kill."""
import asyncio
import json

import pytest

from components.evaluation.client import EndpointSweep, run_endpoint_sweep
from components.evaluation.scoring import score_by_budget
from components.records import Question
from tests.serving.conftest import KEY

QS = [Question(id=f"q{i}", source="t", question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(4)]


def _sweep(server, **kw):
    base = dict(base_url=f"{server}/v1", model="tiny", budgets=(4, 8), seeds=(0, 1), temperature=1.0,
                max_answer_tokens=4, concurrency=4, api_key=KEY, model_hash="abc")
    return EndpointSweep(**{**base, **kw})


def _lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _lines_tolerant(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def test_sweep_grades_every_sample_once_and_scores(server, tmp_path):
    out = tmp_path / "samples.jsonl"
    records = asyncio.run(run_endpoint_sweep(QS, _sweep(server), out))
    assert len(records) == len(QS) * 2 * 2
    keys = [(r["question_id"], r["budget"], r["seed"]) for r in _lines(out)]
    assert len(keys) == len(set(keys)) == 16
    assert all(r["thinking_tokens"] <= r["budget"] for r in records)
    table = score_by_budget(records)
    assert set(table) == {"4", "8"}
    assert table["4"]["seeds"] == 2 and table["4"]["samples_per_question"] == 2 and "pass@2" in table["4"]
    again = asyncio.run(run_endpoint_sweep(QS, _sweep(server), out))  # nothing left to do
    assert len(_lines(out)) == 16 and len(again) == 16


def test_killed_sweep_resumes_without_duplicates(server, tmp_path):
    out = tmp_path / "samples.jsonl"
    sweep = _sweep(server, concurrency=1)

    async def run_then_kill():
        task = asyncio.create_task(run_endpoint_sweep(QS, sweep, out))
        while not out.exists() or len(out.read_text().splitlines()) < 3:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_kill())
    kept = _lines(out)
    assert 3 <= len(kept) < 16
    with open(out, "a") as f:  # a torn line, as a SIGKILL mid-write would leave
        f.write('{"question_id": "q0", "bud')
    records = asyncio.run(run_endpoint_sweep(QS, sweep, out))
    keys = [(r["question_id"], r["budget"], r["seed"]) for r in records]
    assert len(keys) == len(set(keys)) == 16
    on_disk = [(r["question_id"], r["budget"], r["seed"]) for r in _lines_tolerant(out)]
    assert len(on_disk) == len(set(on_disk)) == 16
    first = {(r["question_id"], r["budget"], r["seed"]): r for r in kept}
    for r in records:  # finished work was kept, not redone
        k = (r["question_id"], r["budget"], r["seed"])
        if k in first:
            assert r == first[k]


def test_changed_settings_do_not_reuse_samples(server, tmp_path):
    out = tmp_path / "samples.jsonl"
    asyncio.run(run_endpoint_sweep(QS[:2], _sweep(server, budgets=(4,), seeds=(0,)), out))
    records = asyncio.run(run_endpoint_sweep(QS[:2], _sweep(server, budgets=(4,), seeds=(0,), model_hash="new"), out))
    assert len(records) == 2 and len(_lines(out)) == 4


def test_min_thinking_tokens_is_accepted_and_honoured_by_the_endpoint(server, tmp_path):
    records = asyncio.run(run_endpoint_sweep(QS[:2], _sweep(server, budgets=(12,), seeds=(0,), min_thinking_tokens=6,
                                                            engine="hf", thinking_cap=48), tmp_path / "s.jsonl"))
    assert len(records) == 2 and not any(r.get("failed") for r in records)
    assert all(6 <= r["thinking_tokens"] <= 12 for r in records)


def test_a_request_the_endpoint_rejects_is_recorded_and_the_sweep_goes_on(server, tmp_path):
    """A budget over the engine's thinking cap is refused by the endpoint (4xx): recorded, not fatal."""
    out = tmp_path / "s.jsonl"
    records = asyncio.run(run_endpoint_sweep(QS[:2], _sweep(server, budgets=(8, 10_000), seeds=(0,)), out))
    assert len(records) == 4
    assert [r["budget"] for r in records if r.get("failed")] == [10_000, 10_000]
    assert all(not r.get("failed") for r in records if r["budget"] == 8)
