"""Continuous batching in the HF engine: rows join a running batch between steps and are answered as they end."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from components.inference.budget_forcing import BudgetSpec, ForcedResult, Phase
from components.inference.engine import Sampling
from tests.support.engine_checks import prompts, widened


@dataclass(eq=False)
class Job:
    prompt: list[int]
    spec: BudgetSpec
    seed: int = 0
    leave_after: Optional[int] = None  # tokens after which its caller goes away
    tokens: list[int] = field(default_factory=list)
    result: Optional[ForcedResult] = None
    finished_at: Optional[int] = None  # forward passes the model had made when it was answered
    error: Optional[Exception] = None

    def gone(self) -> bool:
        return self.leave_after is not None and len(self.tokens) >= self.leave_after

    def on_token(self, token: int, phase: Phase) -> None:
        self.tokens.append(token)

    def finish(self, result: ForcedResult) -> None:
        assert self.result is None and self.error is None, "answered twice"
        self.result = result

    def fail(self, error: Exception) -> None:
        assert self.result is None and self.error is None, "answered twice"
        self.error = error


@pytest.fixture
def lively(tiny_engine):
    """The tiny model with weights drawn wide (seeded), three rows at a time: rows that differ."""
    return widened(tiny_engine, batch_size=3, unlimited_thinking_tokens=64)


def _run(engine, jobs: list[Job], sampling: Sampling, first: int) -> list[tuple[int, int]]:
    """``jobs[:first]`` start, the rest join as rows free up; the (batch width, fed length) of every forward."""
    passes: list[tuple[int, int]] = []
    handle = engine.model.register_forward_pre_hook(
        lambda m, a, kw: passes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    for j in jobs:
        j.finish = (lambda job: lambda r: (Job.finish(job, r), setattr(job, "finished_at", len(passes))))(j)
    queue = list(jobs[first:])

    def more(room: int) -> list[Job]:
        taken = queue[:room]
        del queue[:room]
        return taken
    try:
        engine.generate_rolling(jobs[:first], more, sampling)
    finally:
        handle.remove()
    return passes


def _ids(engine, texts):
    return [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_rows_that_join_a_running_batch_get_what_they_would_alone(lively):
    texts = prompts(lively)  # six prompts of different lengths
    specs = [BudgetSpec(max_thinking_tokens=b, max_answer_tokens=a) for b, a in
             ((30, 4), (3, 2), (12, 6), (5, 3), (20, 2), (8, 4))]
    no_stop = Sampling(logit_bias={i: -100.0 for i in lively.vocab.stop_ids})  # thinking runs to each budget
    alone = [lively.generate_forced([t], [s], no_stop)[0] for t, s in zip(texts, specs)]
    jobs = [Job(p, s) for p, s in zip(_ids(lively, texts), specs)]
    passes = _run(lively, jobs, no_stop, first=2)
    for job, ref in zip(jobs, alone):
        assert job.result.token_ids == ref.token_ids and job.result.answer == ref.answer
        assert job.result.thinking_tokens == ref.thinking_tokens
        assert job.tokens == ref.token_ids  # on_token saw every token, in order
    assert max(width for width, _ in passes) <= 3
    joins = [width for width, fed in passes[1:] if fed > 1]  # prefills after the first: rows joining mid-run
    assert sum(joins) == len(jobs) - 2
    # the short jobs were answered while the 30-token one was still decoding, not when the batch drained
    assert jobs[1].finished_at < jobs[0].finished_at and jobs[3].finished_at < jobs[0].finished_at
    # and rows took the freed places at once: fewer forward passes than three static batches of the same jobs
    static = sum(max(len(r.token_ids) for r in alone[i:i + 3]) for i in (0, 3))
    assert len(passes) - 1 - len(joins) < static


def test_sampled_rows_draw_from_their_own_seeds_wherever_they_join(lively):
    texts = prompts(lively)
    specs = [BudgetSpec(max_thinking_tokens=b, max_answer_tokens=3) for b in (14, 2, 9, 4, 11, 6)]
    s = Sampling(temperature=1.0, top_p=0.9)
    alone = [lively.generate_forced([t], [sp], s, seeds=[100 + i])[0] for i, (t, sp) in enumerate(zip(texts, specs))]
    jobs = [Job(p, sp, seed=100 + i) for i, (p, sp) in enumerate(zip(_ids(lively, texts), specs))]
    _run(lively, jobs, s, first=3)
    assert [j.result.token_ids for j in jobs] == [r.token_ids for r in alone]


def test_a_row_whose_caller_left_stops_at_its_next_token_and_frees_its_place(lively):
    texts = prompts(lively)[:4]
    no_stop = Sampling(logit_bias={i: -100.0 for i in lively.vocab.stop_ids})
    spec = BudgetSpec(max_thinking_tokens=40, max_answer_tokens=2)
    jobs = [Job(p, spec, leave_after=5 if i == 0 else None) for i, p in enumerate(_ids(lively, texts))]
    passes = _run(lively, jobs, no_stop, first=3)
    assert len(jobs[0].result.token_ids) == 5  # stopped at its next token, answered with what it had
    assert all(len(j.result.token_ids) > 40 for j in jobs[1:])
    # the fourth took the freed place at once: prefilled right after the step that gave the first its 5th token
    assert passes[:7] == [(3, passes[0][1])] + [(3, 1)] * 4 + [(1, len(jobs[3].prompt)), (2, 1)]


def test_a_model_whose_rows_cannot_join_runs_them_batch_after_batch(lively, monkeypatch):
    from components.inference import decoding
    texts = prompts(lively)
    spec = BudgetSpec(max_thinking_tokens=6, max_answer_tokens=2)
    no_stop = Sampling(logit_bias={i: -100.0 for i in lively.vocab.stop_ids})
    alone = [lively.generate_forced([t], [spec], no_stop)[0] for t in texts]
    monkeypatch.setattr(decoding, "joinable_cache", lambda model: None)
    jobs = [Job(p, spec) for p in _ids(lively, texts)]
    passes = _run(lively, jobs, no_stop, first=3)
    assert [j.result.token_ids for j in jobs] == [r.token_ids for r in alone]
    assert [width for width, fed in passes if fed > 1] == [3, 3]  # two batches, nobody joined mid-run


def test_a_row_whose_prefill_fails_fails_alone_and_the_running_rows_go_on(lively):
    poison = 5  # a prompt of nothing but this token fails in its prefill (as a bad input or an OOM would)
    texts = prompts(lively)[:4]
    no_stop = Sampling(logit_bias={i: -100.0 for i in lively.vocab.stop_ids})
    spec = BudgetSpec(max_thinking_tokens=10, max_answer_tokens=2)
    alone = [lively.generate_forced([t], [spec], no_stop)[0] for t in texts]
    ids = _ids(lively, texts)
    assert all(p.count(poison) < 9 for p in ids)

    def refuse(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1 and bool(((kwargs["input_ids"] == poison).sum(dim=1) >= 9).any()):
            raise RuntimeError("prefill failed")
    handle = lively.model.register_forward_pre_hook(refuse, with_kwargs=True)
    try:
        jobs = [Job(ids[0], spec), Job(ids[1], spec), Job([poison] * 9, spec), Job(ids[2], spec), Job(ids[3], spec)]
        _run(lively, jobs, no_stop, first=2)
    finally:
        handle.remove()
    assert isinstance(jobs[2].error, RuntimeError) and jobs[2].result is None
    assert [j.result.token_ids for j in jobs[:2] + jobs[3:]] == [r.token_ids for r in alone]


def test_a_batch_rows_keep_joining_carries_no_departed_row_s_length(lively):
    """Columns no row uses any more are dropped: the cache is never wider than its oldest row's prompt and tokens,
    however long the run goes on."""
    texts = prompts(lively) * 3  # 18 jobs through 3 rows: the run lasts six rows' lifetimes
    no_stop = Sampling(logit_bias={i: -100.0 for i in lively.vocab.stop_ids})
    budgets = [5, 20, 12, 30, 8, 17] * 3  # rows end apart: the batch is never empty between joins
    jobs = [Job(p, BudgetSpec(max_thinking_tokens=b, max_answer_tokens=2)) for p, b in zip(_ids(lively, texts), budgets)]
    widths: list[int] = []
    handle = lively.model.register_forward_pre_hook(
        lambda m, a, kw: widths.append(kw["attention_mask"].shape[1]), with_kwargs=True)
    try:
        _run(lively, jobs, no_stop, first=3)
    finally:
        handle.remove()
    longest = max(len(j.prompt) for j in jobs) + max(len(j.result.token_ids) for j in jobs)
    assert max(widths) <= longest, (max(widths), longest)
    assert sum(len(j.result.token_ids) for j in jobs) > 2 * longest  # untrimmed, the width would pass this
