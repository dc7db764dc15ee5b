"""Streamed and plain requests on the HF server in both batching modes, side by side in one run.

The replica's app (``S1Service`` + ``build_api`` under uvicorn, HF engine, one torch thread, no Ray) serves
``--requests`` budget-forced greedy chat requests at ``--concurrency``, first non-streamed then streamed, with
``serve.batching: continuous`` and then ``micro``. Prints requests/s for each of the four.

    python benchmarks/serve_streams.py [--model models/tiny/sft] [--requests 64] [--concurrency 16] [--budget 128]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import load_config  # noqa: E402
from components.data.pool import generate_heldout  # noqa: E402


async def _load(url: str, questions: list[str], budget: int, concurrency: int, stream: bool) -> float:
    """Wall time of every question answered (a stream read to its end), ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(q: str) -> None:
            body = {"model": "m", "messages": [{"role": "user", "content": q}], "max_tokens": 16,
                    "max_thinking_tokens": budget, "final_answer_prefix": "Answer:", "stream": stream}
            async with sem:
                if stream:
                    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                        assert r.status_code == 200, r.status_code
                        async for _ in r.aiter_lines():
                            pass
                else:
                    r = await client.post(f"{url}/v1/chat/completions", json=body)
                    assert r.status_code == 200, r.text
        t = time.perf_counter()
        await asyncio.gather(*(one(q) for q in questions))
        return time.perf_counter() - t


def _serve(service):
    """``service``'s app under uvicorn in a thread on a free loopback port: the server and its URL."""
    import threading

    import uvicorn

    from components.common.network import free_port
    from components.serving.service import build_api
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(service), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    import torch

    from components.serving.service import S1Service
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny/sft")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--budget", type=int, default=128)
    args = ap.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"--model {args.model} not found: run `make demo` first")
    cfg = load_config("params.yaml")
    questions = [q.question for q in generate_heldout(99, args.requests, cfg.pool.domains, 3, 6)]
    torch.set_num_threads(1)  # the single thread a Serve replica gets (serve.num_cpus: 1)
    print(f"{args.requests} requests, concurrency {args.concurrency}, budget {args.budget}; 1 torch thread")
    for batching in ("continuous", "micro"):
        service = S1Service(args.model, model_name="m", max_batch_size=args.concurrency, default_answer_tokens=16,
                            unlimited_thinking_tokens=cfg.engine.unlimited_thinking_tokens, batching=batching,
                            batch_wait_timeout_s=cfg.serve.batch_wait_timeout_s,
                            api_key_env="S1FLOW_SERVE_STREAMS_NO_KEY")
        server, url = _serve(service)
        try:
            asyncio.run(_load(url, questions[:4], args.budget, 4, False))  # warm-up
            for stream in (False, True):
                wall = asyncio.run(_load(url, questions, args.budget, args.concurrency, stream))
                print(f"batching {batching:10s} {'streamed' if stream else 'plain':8s}: "
                      f"{args.requests / wall:.2f} req/s ({wall:.1f}s)")
        finally:
            server.should_exit = True


if __name__ == "__main__":
    main()
