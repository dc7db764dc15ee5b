"""Distillation at scale: the teacher over the pool with Ray Data, resumable, exactly once.

Pending questions (those without a successful result shard) stream through
``map_batches`` into a pool of ``teacher.workers`` actors; each actor holds one
teacher client with its share of the concurrency and rate limits, answers a
batch with concurrent calls and writes the finished batch as a shard
(components/distill/shards.py) before reporting back: a restart, even after SIGKILL,
skips every question already done and loses only the batches in flight. The
driver only counts progress and cost. Failures are kept (error + raw response)
and retried by the next run.

Exactly once for money, not only for results:

- every question is isolated: whatever one call raises becomes that question's
  recorded failure (error + raw text), never a lost batch of paid answers;
- cost counts every attempt the provider reports usage for, failed ones too;
- every paid HTTP attempt is journaled (components/distill/journal.py) before it
  leaves and before its answer is used: a crash, a SIGKILL, a timeout or a
  ledger failure never makes a billed call vanish from the count, and each run
  starts from the journal's replay (an attempt that never settled counts at the
  most the provider may bill for it);
- ``teacher.max_cost_usd`` caps the spend over the whole shard set (every run):
  before an attempt leaves, its worker reserves the attempt's worst case with
  one ledger actor, and the settle corrects the reservation to what was billed;
  an attempt whose worst case does not fit in what is left waits for the calls
  in flight to settle, and when none is in flight the worker stops paying. Calls
  in flight count against the cap, so the run never spends past it; a question
  refused (first attempt or a retry) is not asked: it stays pending (the tokens
  its earlier attempts were billed are kept in a ``not asked`` row), the stage
  stops with a clear message, and a rerun with a higher cap continues where it stopped;
- a lock on the shard directory (:meth:`ShardStore.lock`) makes a second
  concurrent run refuse instead of paying again for every pending question; a
  run that loses it (S3 heartbeat) stops paying at its next call and ends with
  :class:`~components.distill.shards.LockLost`.

Shards live under ``<teacher.shard_uri>/<teacher fingerprint>`` (default
``runs/<profile>/distill/<teacher fingerprint>``): changing the teacher (model,
prompt, sampling) starts a fresh set instead of mixing traces. The actors run on
whichever nodes Ray places them, and each writes its shards where it runs: on a
Ray cluster of several nodes the default node-local directory would scatter the
paid answers over the nodes' disks (a rerun would pay for them again), so the run
refuses to start there until ``teacher.shard_uri`` names storage every node
reaches (``s3://…``, or a path every node mounts).

    report = distill_pool(questions, cfg.teacher, shard_dir); traces = merged_traces(questions, shard_dir)
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from components.common.progress import progress_bar
from components.common.raycluster import actor_pool, ensure_ray
from components.config import ConfigError, TeacherConfig
from components.distill.journal import (
    AttemptUsage,
    MeteredTransport,
    SpendJournal,
    SpendRefused,
    attempt_usage,
    replay,
)
from components.distill.shards import HeldLock, ShardStore, latest_rows
from components.distill.teachers import build_teacher, check_teacher_key, teacher_key, unexpected_failure
from components.records import Question, Trace

log = logging.getLogger(__name__)


class CostCapReached(RuntimeError):
    """The run stopped at ``teacher.max_cost_usd``; finished work is kept and a rerun continues."""


NOT_ASKED = "not asked: "  # the error of a row kept for a question refused on a retry (pending, not failed)
_SETTLE_POLL_S = 0.05  # how often a call waiting for room under the cap asks the ledger again


def not_asked(row: Trace | dict) -> bool:
    """Whether a shard row records a question the run stopped asking (its billed attempts, no answer)."""
    t = row if isinstance(row, dict) else row.model_dump()
    return not t.get("ok", True) and str(t.get("error", "")).startswith(NOT_ASKED)

# Fields that change what the teacher writes; the others (limits, retries, workers) do not.
_OUTPUT_FIELDS = ("kind", "model", "base_url", "system_prompt", "max_tokens", "temperature", "extra_body",
                  "slip_probability", "seed")


def teacher_fingerprint(cfg: TeacherConfig) -> str:
    keyed = {k: getattr(cfg, k) for k in _OUTPUT_FIELDS}
    if cfg.style != "standard":  # keyed only when set: the standard teacher's shard sets keep their names
        keyed["style"] = cfg.style
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def cost_usd(trace: Trace | dict, cfg: TeacherConfig) -> float:
    t = trace if isinstance(trace, dict) else trace.model_dump()
    return (t["prompt_tokens"] * cfg.price_input_per_mtok + t["completion_tokens"] * cfg.price_output_per_mtok) / 1e6


def batches_in_flight_per_worker(cfg: TeacherConfig) -> int:
    """Batches an actor works on at once: enough to keep its share of the concurrency busy, one more
    to bridge the gap while a batch's last call finishes. A kill loses at most these."""
    return -(-cfg.calls_per_worker // cfg.batch_size) + 1


def max_lost_on_kill(cfg: TeacherConfig) -> int:
    """Questions whose calls a SIGKILL can waste: every batch in flight on every worker."""
    return cfg.workers * batches_in_flight_per_worker(cfg) * cfg.batch_size


class TeacherWorker:
    """A Ray Data actor: one teacher client answering a batch with concurrent calls.

    The worker writes the finished batch as a shard itself, before reporting back:
    what a worker finished is on disk even if the driver dies the next moment.
    Every paid HTTP attempt goes through a :class:`MeteredTransport`: journaled
    (components/distill/journal.py) before it leaves and before its answer is used,
    and booked with the run's :class:`SpendLedger` actor. Once the ledger says stop
    (the spend cap is spent, or the run lost its shard lock), or cannot be reached,
    the worker starts no more calls: those questions stay pending. A booking that
    fails never loses the answers already paid for: the batch is still written.
    Ray Data deletes the actor's UDF when the pool shuts down: :meth:`close` (from
    ``__del__``) closes the journal."""

    def __init__(self, cfg_json: str, shard_url: str, ledger=None):
        self.cfg = TeacherConfig.model_validate_json(cfg_json)
        self.store = ShardStore(shard_url)
        self.journal = SpendJournal(self.store)
        self.ledger, self.stopped = ledger, None
        self.metered = self.cfg.kind != "programmatic"  # the embedded teacher makes no HTTP call
        transport = MeteredTransport(self.cfg, self.journal, self._gate, self._book) if self.metered else None
        self.teacher = build_teacher(self.cfg, **({"transport": transport} if transport else {}))
        self.slots = asyncio.Semaphore(self.cfg.calls_per_worker)  # the cap is checked when a call can start

    def _stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            log.warning("distill worker: starting no more paid calls: %s", reason)

    async def _gate(self, worst: Optional[float] = None) -> Optional[str]:
        """Why no paid call may start now, or None. With ``worst`` (an attempt about to leave), the attempt's worst
        case is reserved with the ledger first: it waits while calls in flight hold what is left, and the worker
        stops paying once nothing is in flight and the worst case still does not fit."""
        if self.stopped is not None or self.ledger is None:
            return self.stopped
        cap = "the spend cap teacher.max_cost_usd is reached"
        try:
            if worst is None:
                left, reason, in_flight = await self.ledger.state.remote()
                if reason:
                    self._stop(reason)
                elif left is not None and left <= 0 and not in_flight:
                    self._stop(cap)
                return self.stopped
            # a call in flight settles within its timeout; one that never does (its worker died) must not park
            # this worker for good
            deadline = time.monotonic() + 2 * self.cfg.timeout_s + 5
            while True:
                granted, reason, in_flight = await self.ledger.reserve.remote(worst)
                if granted:
                    return None
                if reason or not in_flight or time.monotonic() > deadline:
                    self._stop(reason or cap)
                    return self.stopped
                await asyncio.sleep(_SETTLE_POLL_S)  # calls in flight hold part of what is left
        except Exception as e:  # no ledger, no cap: stop paying rather than pay blind
            self._stop(f"the spend ledger is unreachable ({type(e).__name__}: {e})")
        return self.stopped

    async def _book(self, worst: float, usd: float) -> None:
        """Turn an attempt's reservation into what it cost; never raises (the paid answer is kept either way)."""
        if self.ledger is not None:
            try:
                await self.ledger.settle.remote(worst, usd)
            except Exception as e:
                self._stop(f"the spend ledger is unreachable ({type(e).__name__}: {e})")

    async def _book_unmetered(self, trace: Trace) -> None:
        usd = cost_usd(trace, self.cfg)
        if usd:
            try:
                await asyncio.to_thread(lambda: self.journal.settle(self.journal.reserve(usd), usd))
            except Exception as e:
                self._stop(f"the spend journal cannot be written ({type(e).__name__}: {e})")
            if self.ledger is not None:
                try:
                    await self.ledger.spend.remote(usd)
                except Exception as e:
                    self._stop(f"the spend ledger is unreachable ({type(e).__name__}: {e})")

    async def answer(self, question: Question) -> Optional[Trace]:
        """One question, isolated: a trace (done or failed), a :data:`NOT_ASKED` row (refused on a retry: what its
        earlier attempts were billed), or None when the run stopped paying before any attempt left."""
        async with self.slots:
            if await self._gate():
                return None
            start = time.monotonic()
            usage = AttemptUsage()
            attempt_usage.set(usage)  # this question's task: its transport attempts add up here
            name = getattr(self.teacher, "name", self.cfg.model)
            try:
                trace = await self.teacher.attempt(question)
            except SpendRefused as e:  # the run stopped paying between two attempts of this question
                if not usage.attempts:
                    return None
                return Trace(question_id=question.id, teacher=name, ok=False, error=f"{NOT_ASKED}{e}"[:2000],
                             prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                             attempts=usage.attempts, latency_s=round(time.monotonic() - start, 3))
            except Exception as e:  # teachers should not raise; if one does, only this question fails
                trace = unexpected_failure(question, name, e, time.monotonic() - start, (teacher_key(self.cfg),))
            if not self.metered:
                await self._book_unmetered(trace)
            return trace

    async def __call__(self, batch: dict) -> dict:
        questions = [Question.model_validate_json(s) for s in batch["question"]]
        results = await asyncio.gather(*(self.answer(q) for q in questions))
        traces = [t for t in results if t is not None]
        if traces:
            self.store.write([t.model_dump() for t in traces])
        return {"status": ["unasked" if t is None or not_asked(t) else "done" if t.ok else "failed" for t in results],
                "prompt_tokens": [t.prompt_tokens if t else 0 for t in results],
                "completion_tokens": [t.completion_tokens if t else 0 for t in results]}

    def close(self) -> None:
        self.journal.close()

    def __del__(self) -> None:
        journal = getattr(self, "journal", None)
        if journal is not None:
            journal.close()


class SpendLedger:
    """What is left under the cap (None: no cap) and whether the run must stop paying, shared by every worker
    of a run (a Ray actor: one booking at a time). ``left`` is net of the worst cases reserved by the calls in
    flight: a call is granted only when its worst case fits, so the calls in flight never take the spend past
    the cap."""

    _SLACK = 1e-12  # float sums of reservations: a worst case that fits exactly is granted

    def __init__(self, left_usd: Optional[float]):
        self._left, self._stopped, self._in_flight = left_usd, None, 0

    def state(self) -> tuple[Optional[float], Optional[str], int]:
        """(what is left, why the run must stop or None, calls in flight)."""
        return self._left, self._stopped, self._in_flight

    def reserve(self, worst_usd: float) -> tuple[bool, Optional[str], int]:
        """Hold ``worst_usd`` for a call about to leave: (granted, why the run must stop or None, calls in flight)."""
        if self._stopped is not None:
            return False, self._stopped, self._in_flight
        if self._left is not None:
            if worst_usd > self._left + self._SLACK:
                return False, None, self._in_flight
            self._left -= worst_usd
        self._in_flight += 1
        return True, None, self._in_flight

    def settle(self, worst_usd: float, usd: float) -> Optional[float]:
        """A reserved call ended, billed ``usd``: the reservation becomes that."""
        self._in_flight = max(0, self._in_flight - 1)
        if self._left is not None:
            self._left += worst_usd - usd
        return self._left

    def spend(self, usd: float) -> Optional[float]:
        """Book a cost no reservation covered (the embedded teacher's, booked after the fact)."""
        if self._left is not None:
            self._left -= usd
        return self._left

    def stop(self, reason: str) -> None:
        self._stopped = self._stopped or reason


def spent_usd(rows: list[dict], cfg: TeacherConfig) -> float:
    """What the shard set's rows cost (every attempt's billed usage, done and failed)."""
    return sum(cost_usd(r, cfg) for r in rows)


def _summary(store: ShardStore, questions: list[Question], cfg: TeacherConfig) -> dict:
    wanted = {q.id for q in questions}
    rows = [r for r in store.rows() if r["question_id"] in wanted]  # the shards are read once
    latest = latest_rows(rows, store.id_key)
    answered = {k: r for k, r in latest.items() if not not_asked(r)}  # a not-asked row is still pending
    failures = Counter(r["error"].split(" (attempt")[0][:60] for r in answered.values() if not r["ok"])
    return {"questions": len(questions), "done": sum(r["ok"] for r in answered.values()),
            "failed": sum(not r["ok"] for r in answered.values()), "missing": len(wanted - set(answered)),
            "calls": sum(r.get("attempts", 1) for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "cost_usd": round(sum(cost_usd(r, cfg) for r in rows), 6),
            "failure_reasons": dict(failures), "shards": len(store.shards())}


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster."""
    import ray
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def node_local_shards_problem(store: ShardStore, cfg: TeacherConfig, nodes: int) -> str | None:
    """Why the shards cannot serve a run on ``nodes`` Ray nodes, or None. A local path counts as shared only
    when ``teacher.shard_uri`` declares it (a mount every node has); the default work dir is one node's disk."""
    if nodes <= 1 or not store.local or cfg.shard_uri:
        return None
    return (f"teacher.shard_uri: the Ray cluster has {nodes} nodes, but the distillation shards would be written to "
            f"{store.url}, a directory on each worker's own node: paid answers would be scattered over the nodes "
            "and a rerun would pay for them again. Set teacher.shard_uri to storage every node reaches "
            "(s3://bucket/prefix, or a path every node mounts)")


def distill_pool(questions: list[Question], cfg: TeacherConfig, shard_dir: str | Path) -> dict:
    """Run the teacher over every question not yet done, under the spend cap; returns the run's report
    (``stopped_at_cost_cap`` says the cap left questions unasked). Raises :class:`LockHeld` when another
    run holds the shard directory."""
    check_teacher_key(cfg)  # before the lock, Ray or any call
    store = ShardStore(shard_dir)
    with store.lock() as held:
        report = _distill_locked(questions, cfg, store, held)
    held.check()  # raises LockLost when another run took over while this one ran
    return report


def _distill_locked(questions: list[Question], cfg: TeacherConfig, store: ShardStore, held: HeldLock) -> dict:
    import ray.data

    rows = list(store.rows())  # read once, under the lock: what is done, what was spent
    latest = latest_rows(rows, store.id_key)
    done = {k for k, r in latest.items() if r.get("ok", True)}
    pending = [q for q in questions if q.id not in done]
    journal = replay(store)  # every billed call of every run, crashed and timed-out ones at their worst case
    spent_before = max(journal.spent_usd, spent_usd(rows, cfg))
    left = None if cfg.max_cost_usd is None else max(0.0, cfg.max_cost_usd - spent_before)
    report = {"skipped_done": len(questions) - len(pending), "attempted": len(pending),
              "cost_cap_usd": cfg.max_cost_usd, "spent_before_usd": round(spent_before, 6),
              "unsettled_calls_before": journal.unsettled, "unsettled_usd_before": round(journal.unsettled_usd, 6)}
    start, spent, unasked = time.monotonic(), 0.0, 0
    if pending and left == 0:
        unasked = len(pending)
    elif pending:
        ensure_ray()
        if problem := node_local_shards_problem(store, cfg, alive_nodes()):
            raise ConfigError(problem)  # before any call is paid for
        blocks = -(-len(pending) // cfg.batch_size)
        ds = ray.data.from_items([{"question": q.model_dump_json()} for q in pending], override_num_blocks=blocks)
        ledger = ray.remote(num_cpus=0)(SpendLedger).remote(left)
        held.on_lost(lambda reason: ledger.stop.remote(f"the run lost its shard lock: {reason}"))
        ds = ds.map_batches(TeacherWorker, fn_constructor_kwargs={
                                "cfg_json": cfg.model_dump_json(), "shard_url": store.url, "ledger": ledger},
                            batch_size=cfg.batch_size, num_cpus=0.1,
                            compute=actor_pool(cfg.workers, batches_in_flight_per_worker(cfg)))
        failed, finished = 0, 0
        with progress_bar(f"distilling with {cfg.model}", total=len(pending)) as advance:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                spent += cost_usd({"prompt_tokens": int(batch["prompt_tokens"].sum()),
                                   "completion_tokens": int(batch["completion_tokens"].sum())}, cfg)
                status = batch["status"]
                failed += int((status == "failed").sum())
                unasked += int((status == "unasked").sum())
                finished += len(status)
                rate = finished / max(time.monotonic() - start, 1e-9)
                advance(len(status), rate=f"{rate:.1f}/s", cost=f"${spent:.4f}", failed=failed)
    seconds = time.monotonic() - start
    summary = _summary(store, questions, cfg)
    report.update(summary, seconds=round(seconds, 3), spent_this_run_usd=round(spent, 6),
                  spent_usd=round(max(replay(store).spent_usd, summary["cost_usd"]), 6),
                  unasked=unasked, stopped_at_cost_cap=unasked > 0 and held.lost is None,
                  questions_per_second=round(len(pending) / seconds, 3) if pending and seconds else None)
    return report


def cost_cap_message(report: dict) -> str:
    return (f"distill: spend cap teacher.max_cost_usd=${report['cost_cap_usd']:g} reached "
            f"(${report['spent_usd']:.4f} spent on this teacher's shards, by the spend journal); "
            f"{report['unasked']} questions not asked, "
            f"{report['done']} done and kept. Raise teacher.max_cost_usd and run the stage again to continue.")


def merged_traces(questions: list[Question], shard_dir: str | Path) -> list[Trace]:
    """One trace per question, in pool order (a failure where no attempt succeeded)."""
    latest = ShardStore(shard_dir).latest()
    missing = [q.id for q in questions if q.id not in latest or not_asked(latest[q.id])]
    if missing:
        raise RuntimeError(f"distill: {len(missing)} questions have no result yet (e.g. {missing[:3]}); "
                           "run the distill stage again to finish them")
    return [Trace.model_validate(latest[q.id]) for q in questions]
