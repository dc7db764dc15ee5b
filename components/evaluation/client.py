"""A budget sweep against the Serve endpoint (the service users call), resumable.

Bounded concurrency (an asyncio semaphore) through the official ``openai``
client, a progress bar, and an append-only JSONL of graded samples: a killed
sweep restarts and skips every sample already graded under the same run key,
so nothing is repeated or duplicated. The run key is everything that makes two
samples comparable: the model (name + weights hash), the engine and its version,
the thinking cap, the grader version and the generation settings (not the
budgets or seeds, which index the samples).

A request that fails (e.g. a question longer than the context) is recorded as
a ``failed`` line with its error; the sweep goes on, and the next run retries
it (failed lines never count as done). The records returned, and so the report,
cover exactly this sweep's questions x budgets x seeds: samples of questions or
seeds outside the sweep stay on disk but are not scored.

    records = asyncio.run(run_endpoint_sweep(questions, EndpointSweep(...), "samples.jsonl"))
    ok = [r for r in records if not r.get("failed")]
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from components.common.grading import GRADER_VERSION, grade_response
from components.common.progress import progress_bar
from components.records import Generation, Question, Thought

# Fields of EndpointSweep that make two samples comparable (budgets and seeds index them instead).
RUN_KEY_FIELDS = ("model", "model_hash", "engine", "thinking_cap", "grader_version", "temperature", "top_p",
                  "max_answer_tokens", "final_answer_prefix", "min_thinking_tokens", "num_waits", "wait_strings")


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
    min_thinking_tokens: int = 0
    num_waits: int = 0
    wait_strings: tuple[str, ...] = ("Wait",)
    concurrency: int = 16
    model_hash: str = ""
    engine: str = ""                          # backend and version, e.g. "vllm 0.32.0"
    thinking_cap: Optional[int] = None        # engine.unlimited_thinking_tokens: the 'no budget' run's cap
    grader_version: str = GRADER_VERSION
    api_key: str = field(default="", repr=False)
    timeout_s: float = 600.0

    def run_key(self) -> str:
        """What makes two samples comparable: model, engine, thinking cap, grader, generation settings."""
        parts = {k: v for k, v in asdict(self).items() if k in RUN_KEY_FIELDS}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def completed(path: Path, run_key: str) -> dict[tuple, dict]:
    """Graded samples already on disk for this run key (failed requests are not done); a torn last line
    (a kill mid-write) is ignored."""
    done: dict[tuple, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("run_key") == run_key and not r.get("failed"):
            done[(r["question_id"], r["budget"], r["seed"])] = r
    return done


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def request_body(sweep: EndpointSweep, budget: Optional[int]) -> dict[str, Any]:
    """The budget-forcing fields every request carries (the Serve protocol's extra body)."""
    return {"max_thinking_tokens": budget, "min_thinking_tokens": sweep.min_thinking_tokens,
            "num_waits": sweep.num_waits, "wait_strings": list(sweep.wait_strings),
            "final_answer_prefix": sweep.final_answer_prefix}


def _graded(q: Question, budget: Optional[int], r) -> Generation:
    msg, meta = r.choices[0].message, (r.choices[0].model_extra or {}).get("s1", {})
    reasoning = r.usage.completion_tokens_details.reasoning_tokens
    thought = Thought(thinking=(msg.model_extra or {}).get("reasoning_content") or "", answer=msg.content or "",
                      thinking_tokens=reasoning, answer_tokens=r.usage.completion_tokens - reasoning,
                      waits_used=meta.get("waits_used", 0), hit_budget=meta.get("hit_budget", False))
    return Generation.from_forced(thought, q, budget, grade_response(q, thought.answer))


async def run_endpoint_sweep(questions: list[Question], sweep: EndpointSweep, out_path: str | Path,
                             client=None) -> list[dict]:
    """Every (question, budget, seed) of this sweep, graded; failed requests come back with ``failed: true``.
    ``client``: an ``openai.AsyncOpenAI``-like object (default: one for ``sweep.base_url``)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    key = sweep.run_key()
    done = completed(out_path, key)
    wanted = [(q, b, s) for b in sweep.budgets for s in sweep.seeds for q in questions]
    todo = [(q, b, s) for q, b, s in wanted if (q.id, b, s) not in done]
    own_client = client is None
    if own_client:
        import openai
        client = openai.AsyncOpenAI(base_url=sweep.base_url, api_key=sweep.api_key or "none", max_retries=3,
                                    timeout=sweep.timeout_s)
    sem, lock = asyncio.Semaphore(sweep.concurrency), asyncio.Lock()
    new: dict[tuple, dict] = {}
    with open(out_path, "a") as sink, progress_bar(f"sweep via {sweep.base_url}", total=len(todo)) as advance:
        if _ends_mid_line(out_path):
            sink.write("\n")  # end a line torn by a kill, so the next record starts clean

        async def one(q: Question, budget: Optional[int], seed: int) -> None:
            try:
                async with sem:
                    r = await client.chat.completions.create(
                        model=sweep.model, messages=[{"role": "user", "content": q.question}],
                        temperature=sweep.temperature, top_p=sweep.top_p, seed=seed,
                        max_tokens=sweep.max_answer_tokens, extra_body=request_body(sweep, budget))
                record = {**_graded(q, budget, r).model_dump(), "seed": seed, "run_key": key}
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one bad request must not sink the sweep; the next run retries it
                record = {"question_id": q.id, "budget": budget, "seed": seed, "run_key": key, "failed": True,
                          "error": f"{type(e).__name__}: {e}"[:2000]}
            async with lock:  # one whole line at a time, flushed, so a kill loses only in-flight requests
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                new[(q.id, budget, seed)] = record
                advance()

        await asyncio.gather(*(one(q, b, s) for q, b, s in todo))
    if own_client:
        await client.close()
    merged = {**done, **new}
    return [merged[(q.id, b, s)] for q, b, s in wanted if (q.id, b, s) in merged]
