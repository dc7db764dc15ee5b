"""Load on the Serve endpoint vs the same prompts in-process, in one run.

200 chat requests at concurrency 16 (budget-forced, greedy), with a burst of
malformed requests mixed in. Prints throughput ratio Serve / in-process (goal
>= 0.8x), p50/p99 latency, non-2xx count among good requests (goal 0), and the
status codes the malformed ones got (goal: 4xx only).

    python benchmarks/serve_load.py [--model models/tiny/sft] [--requests 200] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from pathlib import Path

import httpx
import torch

from components.config import load_config
from components.data.pool import generate_heldout
from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec
from components.inference.hf_engine import HFEngine

MALFORMED = [
    (b"{not json", "application/json"),
    (b'{"model": "s1flow-tiny", "messages": []}', "application/json"),
    (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', "application/json"),
    (b'{"model": "s1flow-tiny", "messages": [{"role": "user", "content": "hi"}], "max_thinking_tokens": -5}',
     "application/json"),
    (b'{"model": "s1flow-tiny", "messages": [{"role": "user", "content": "hi"}], "max_thinking_tokens": 4, '
     b'"min_thinking_tokens": 9}', "application/json"),
]


async def _load(url: str, model: str, questions: list[str], budget: int, concurrency: int, n_bad: int):
    sem = asyncio.Semaphore(concurrency)
    lat, codes, bad_codes = [], [], []
    async with httpx.AsyncClient(timeout=600) as client:
        async def good(q: str):
            body = {"model": model, "messages": [{"role": "user", "content": q}], "max_tokens": 16,
                    "max_thinking_tokens": budget, "final_answer_prefix": "Answer:"}
            async with sem:
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/chat/completions", json=body)
                lat.append(time.perf_counter() - t)
                codes.append(r.status_code)

        async def bad(i: int):
            content, ctype = MALFORMED[i % len(MALFORMED)]
            async with sem:
                r = await client.post(f"{url}/v1/chat/completions", content=content, headers={"Content-Type": ctype})
                bad_codes.append(r.status_code)

        jobs = [good(q) for q in questions] + [bad(i) for i in range(n_bad)]
        random.Random(0).shuffle(jobs)
        t = time.perf_counter()
        await asyncio.gather(*jobs)
        wall = time.perf_counter() - t
    return wall, lat, codes, bad_codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny/sft")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--malformed", type=int, default=40)
    ap.add_argument("--batch-wait", type=float, default=None, help="serve.batch_wait_timeout_s override")
    args = ap.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"--model {args.model} not found: run `make demo` first")
    over = [f"serve.max_batch_size={args.concurrency}"]
    if args.batch_wait is not None:
        over.append(f"serve.batch_wait_timeout_s={args.batch_wait}")
    cfg = load_config("params.yaml", overrides=over)
    questions = [q.question for q in generate_heldout(99, args.requests, cfg.pool.domains, 3, 6)]

    torch.set_num_threads(1)  # the same single thread a Serve replica gets (serve.num_cpus: 1)
    engine = HFEngine.from_pretrained(args.model, batch_size=args.concurrency)
    spec = BudgetSpec(max_thinking_tokens=args.budget, final_answer_prefix="Answer:", max_answer_tokens=16)
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    t = time.perf_counter()
    engine.generate_forced(prompts, [spec] * len(prompts))
    inproc = time.perf_counter() - t
    del engine

    from components.common.network import free_port
    from components.serving.launch import start_server, stop_server
    port = free_port()
    os.environ.pop(cfg.serve.api_key_env, None)
    url = start_server(cfg.serve, cfg.engine, cfg.model.dtype, args.model, port=port)
    try:
        asyncio.run(_load(url, cfg.serve.model_name, questions[:4], args.budget, 4, 0))  # warm-up
        wall, lat, codes, bad_codes = asyncio.run(
            _load(url, cfg.serve.model_name, questions, args.budget, args.concurrency, args.malformed))
        health = httpx.get(f"{url}/health").json()
    finally:
        stop_server()
    lat.sort()
    non2xx = sum(1 for c in codes if not 200 <= c < 300)
    print(f"{args.requests} requests, concurrency {args.concurrency}, budget {args.budget}, "
          f"+{args.malformed} malformed mixed in; 1 thread per side")
    print(f"in-process: {args.requests / inproc:.2f} req/s ({inproc:.1f}s); "
          f"serve: {args.requests / wall:.2f} req/s ({wall:.1f}s incl. malformed) "
          f"-> ratio {inproc / wall:.3f}x (goal >= 0.8x)")
    print(f"server batches: {health['batches']} (mean size {health['mean_batch_size']})")
    print(f"latency p50 {statistics.median(lat):.2f}s  p99 {lat[int(0.99 * (len(lat) - 1))]:.2f}s")
    print(f"good requests non-2xx: {non2xx} (goal 0); malformed status codes: "
          f"{sorted(set(bad_codes))} (all 4xx: {all(400 <= c < 500 for c in bad_codes)})")


if __name__ == "__main__":
    main()
