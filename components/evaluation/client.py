"""A budget sweep against the Serve endpoint (the service users call), resumable.

Bounded concurrency (an asyncio semaphore) through the official ``openai``
client, a progress bar, and an append-only JSONL of graded samples: a killed
sweep restarts and skips every sample already graded under the same run key
(model hash + generation settings), so nothing is repeated or duplicated.

    records = asyncio.run(run_endpoint_sweep(questions, EndpointSweep(...), "samples.jsonl"))
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from components.common.grading import extract_answer, grade_question
from components.common.progress import progress_bar
from components.records import Generation, Question


@dataclass(frozen=True)
class EndpointSweep:
    base_url: str
    model: str
    budgets: tuple[Optional[int], ...]
    seeds: tuple[int, ...] = (0,)
    temperature: float = 0.0
    top_p: float = 1.0
    max_answer_tokens: int = 32
    final_answer_prefix: str = "Answer:"
    num_waits: int = 0
    wait_strings: tuple[str, ...] = ("Wait",)
    concurrency: int = 16
    model_hash: str = ""
    api_key: str = field(default="", repr=False)
    timeout_s: float = 600.0

    def run_key(self) -> str:
        """What makes two samples comparable: model and generation settings (not budgets/seeds)."""
        parts = {k: v for k, v in asdict(self).items()
                 if k in ("model", "temperature", "top_p", "max_answer_tokens", "final_answer_prefix",
                          "num_waits", "wait_strings", "model_hash")}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def completed(path: Path, run_key: str) -> dict[tuple, dict]:
    """Graded samples already on disk for this run key; a torn last line (a kill mid-write) is ignored."""
    done: dict[tuple, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("run_key") == run_key:
            done[(r["question_id"], r["budget"], r["seed"])] = r
    return done


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


async def run_endpoint_sweep(questions: list[Question], sweep: EndpointSweep, out_path: str | Path) -> list[dict]:
    import openai

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    key = sweep.run_key()
    done = completed(out_path, key)
    todo = [(q, b, s) for b in sweep.budgets for s in sweep.seeds for q in questions
            if (q.id, b, s) not in done]
    client = openai.AsyncOpenAI(base_url=sweep.base_url, api_key=sweep.api_key or "none", max_retries=3,
                                timeout=sweep.timeout_s)
    sem, lock = asyncio.Semaphore(sweep.concurrency), asyncio.Lock()
    new: list[dict] = []
    with open(out_path, "a") as sink, progress_bar(f"sweep via {sweep.base_url}", total=len(todo)) as advance:
        if _ends_mid_line(out_path):
            sink.write("\n")  # end a line torn by a kill, so the next record starts clean
        async def one(q: Question, budget: Optional[int], seed: int) -> None:
            extra = {"max_thinking_tokens": budget, "num_waits": sweep.num_waits,
                     "wait_strings": list(sweep.wait_strings), "final_answer_prefix": sweep.final_answer_prefix}
            async with sem:
                r = await client.chat.completions.create(
                    model=sweep.model, messages=[{"role": "user", "content": q.question}],
                    temperature=sweep.temperature, top_p=sweep.top_p, seed=seed,
                    max_tokens=sweep.max_answer_tokens, extra_body=extra)
            msg, meta = r.choices[0].message, (r.choices[0].model_extra or {}).get("s1", {})
            answer = msg.content or ""
            predicted = extract_answer(answer)
            g = Generation(question_id=q.id, budget=budget, prompt=q.question,
                           thinking=(msg.model_extra or {}).get("reasoning_content") or "", answer=answer,
                           thinking_tokens=r.usage.completion_tokens_details.reasoning_tokens,
                           answer_tokens=r.usage.completion_tokens - r.usage.completion_tokens_details.reasoning_tokens,
                           waits_used=meta.get("waits_used", 0), hit_budget=meta.get("hit_budget", False),
                           predicted=predicted, gold=q.answer, correct=grade_question(q, predicted))
            record = {**g.model_dump(), "seed": seed, "run_key": key}
            async with lock:  # one whole line at a time, flushed, so a kill loses only in-flight requests
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                new.append(record)
                advance()

        await asyncio.gather(*(one(q, b, s) for q, b, s in todo))
    await client.close()
    return list(done.values()) + new
