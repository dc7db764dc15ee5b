"""Distillation at scale: the teacher over the pool with Ray Data, resumable, exactly once.

Pending questions (those without a successful result shard) stream through
``map_batches`` into a pool of ``teacher.workers`` actors; each actor holds one
teacher client with its share of the concurrency and rate limits, answers a
batch with concurrent calls and writes the finished batch as a shard
(components/distill/shards.py) before reporting back: a restart, even after SIGKILL,
skips every question already done and loses only the batches in flight. The
driver only counts progress and cost. Failures are kept (error + raw response)
and retried by the next run.

Shards live under ``runs/<profile>/distill/<teacher fingerprint>``: changing the
teacher (model, prompt, sampling) starts a fresh set instead of mixing traces.

    report = distill_pool(questions, cfg.teacher, shard_dir); traces = merged_traces(questions, shard_dir)
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from components.config import TeacherConfig
from components.distill.shards import ShardStore, latest_rows
from components.records import Question, Trace

# Fields that change what the teacher writes; the others (limits, retries, workers) do not.
_OUTPUT_FIELDS = ("kind", "model", "base_url", "system_prompt", "max_tokens", "temperature", "extra_body",
                  "slip_probability", "seed")


def teacher_fingerprint(cfg: TeacherConfig) -> str:
    keyed = {k: getattr(cfg, k) for k in _OUTPUT_FIELDS}
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
    what a worker finished is on disk even if the driver dies the next moment."""

    def __init__(self, cfg_json: str, shard_url: str):
        from components.distill.teachers import build_teacher
        self.teacher = build_teacher(TeacherConfig.model_validate_json(cfg_json))
        self.store = ShardStore(shard_url)

    async def __call__(self, batch: dict) -> dict:
        questions = [Question.model_validate_json(s) for s in batch["question"]]
        traces = await asyncio.gather(*(self.teacher.attempt(q) for q in questions))
        self.store.write([t.model_dump() for t in traces])
        return {"ok": [t.ok for t in traces], "prompt_tokens": [t.prompt_tokens for t in traces],
                "completion_tokens": [t.completion_tokens for t in traces]}


def _summary(store: ShardStore, questions: list[Question], cfg: TeacherConfig) -> dict:
    wanted = {q.id for q in questions}
    rows = [r for r in store.rows() if r["question_id"] in wanted]  # the shards are read once
    latest = latest_rows(rows, store.id_key)
    failures = Counter(r["error"].split(" (attempt")[0][:60] for r in latest.values() if not r["ok"])
    return {"questions": len(questions), "done": sum(r["ok"] for r in latest.values()),
            "failed": sum(not r["ok"] for r in latest.values()), "missing": len(wanted - set(latest)),
            "calls": sum(r.get("attempts", 1) for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "cost_usd": round(sum(cost_usd(r, cfg) for r in rows), 6),
            "failure_reasons": dict(failures), "shards": len(store.shards())}


def distill_pool(questions: list[Question], cfg: TeacherConfig, shard_dir: str | Path) -> dict:
    """Run the teacher over every question not yet done; returns the run's report."""
    import ray.data

    from components.common.progress import progress_bar
    from components.common.raycluster import actor_pool, ensure_ray

    store = ShardStore(shard_dir)
    done = store.done_ids()
    pending = [q for q in questions if q.id not in done]
    report = {"skipped_done": len(questions) - len(pending), "attempted": len(pending)}
    start = time.monotonic()
    if pending:
        ensure_ray()
        blocks = -(-len(pending) // cfg.batch_size)
        ds = ray.data.from_items([{"question": q.model_dump_json()} for q in pending], override_num_blocks=blocks)
        ds = ds.map_batches(TeacherWorker, fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(),
                                                                  "shard_url": store.url},
                            batch_size=cfg.batch_size, num_cpus=0.1,
                            compute=actor_pool(cfg.workers, batches_in_flight_per_worker(cfg)))
        spent, failed, finished = 0.0, 0, 0
        with progress_bar(f"distilling with {cfg.model}", total=len(pending)) as advance:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                spent += cost_usd({"prompt_tokens": int(batch["prompt_tokens"].sum()),
                                   "completion_tokens": int(batch["completion_tokens"].sum())}, cfg)
                failed += int((~batch["ok"]).sum())
                finished += len(batch["ok"])
                rate = finished / max(time.monotonic() - start, 1e-9)
                advance(len(batch["ok"]), rate=f"{rate:.1f}/s", cost=f"${spent:.4f}", failed=failed)
    seconds = time.monotonic() - start
    report.update(_summary(store, questions, cfg), seconds=round(seconds, 3),
                  questions_per_second=round(len(pending) / seconds, 3) if pending and seconds else None)
    return report


def merged_traces(questions: list[Question], shard_dir: str | Path) -> list[Trace]:
    """One trace per question, in pool order (a failure where no attempt succeeded)."""
    latest = ShardStore(shard_dir).latest()
    missing = [q.id for q in questions if q.id not in latest]
    if missing:
        raise RuntimeError(f"distill: {len(missing)} questions have no result yet (e.g. {missing[:3]}); "
                           "run the distill stage again to finish them")
    return [Trace.model_validate(latest[q.id]) for q in questions]
