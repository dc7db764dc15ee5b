"""Load on the Serve endpoint vs the same prompts in-process, in one run.

200 chat requests at concurrency 16 (budget-forced, greedy), with a burst of
malformed requests mixed in. Prints throughput ratio Serve / in-process (goal
>= 0.9x; in-process as the replica runs it, continuous batching with every
prompt queued, and as evaluation runs it, static batches), p50/p99 latency,
non-2xx count among good requests (goal 0), and the status codes the malformed
ones got (goal: 4xx only).

    python benchmarks/serve_load.py [--model models/tiny/sft] [--requests 200] [--concurrency 16]

``--engine vllm`` (run with the vLLM venv's python, which has no Ray): our server
(the same ASGI app a Serve replica hosts, under uvicorn, on vLLM's AsyncLLM with
budget forcing) vs vLLM's own OpenAI server (``python -m
vllm.entrypoints.openai.api_server``) on the same model, prompts and per-request
token counts (``min_tokens = max_tokens`` = what our server generated), at each
``--concurrency`` (comma-separated, default 16,64 there).
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

from components.config import load_config
from components.data.pool import generate_heldout
from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec

MALFORMED = [
    (b"{not json", "application/json"),
    (b'{"model": "s1flow-tiny", "messages": []}', "application/json"),
    (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', "application/json"),
    (b'{"model": "s1flow-tiny", "messages": [{"role": "user", "content": "hi"}], "max_thinking_tokens": -5}',
     "application/json"),
    (b'{"model": "s1flow-tiny", "messages": [{"role": "user", "content": "hi"}], "max_thinking_tokens": 4, '
     b'"min_thinking_tokens": 9}', "application/json"),
]


async def _load(url: str, model: str, questions: list[str], budget: int, concurrency: int, n_bad: int,
                counts: dict[str, int] | None = None):
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
                if counts is not None:
                    counts[q] = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0

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


class _Job:
    """One in-process generation for ``generate_rolling``."""

    def __init__(self, prompt: list[int], spec: BudgetSpec):
        self.prompt, self.spec, self.seed, self.result = prompt, spec, 0, None

    def gone(self) -> bool:
        return False

    def on_token(self, token, phase) -> None:
        pass

    def finish(self, result) -> None:
        self.result = result


def _rolling(engine, prompts: list[str], spec: BudgetSpec) -> None:
    """Every prompt through the engine's continuous batching, queued at once (no HTTP, no event loop)."""
    from components.inference.engine import Sampling
    queue = [_Job(engine.tokenizer(p, add_special_tokens=False)["input_ids"], spec) for p in prompts]
    jobs = list(queue)

    def more(room: int) -> list[_Job]:
        taken = queue[:room]
        del queue[:room]
        return taken
    engine.generate_rolling(more(engine.batch_size), more, Sampling())
    assert all(j.result is not None for j in jobs)


def _pct(lat: list[float], q: float) -> float:
    lat = sorted(lat)
    return lat[int(q * (len(lat) - 1))]


def _wait_up(url: str, timeout: float = 900, proc=None) -> None:
    """Until ``url`` answers ``/health``; stops at once if the server process ``proc`` has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server at {url} exited with code {proc.returncode} before it came up")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up")


async def _vllm_load(url: str, model: str, prompts: list[list[int]], counts: list[int], concurrency: int):
    """Each prompt as token ids (vLLM's completions endpoint takes them as they are) for its count of tokens."""
    sem = asyncio.Semaphore(concurrency)
    lat, codes = [], []
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(p: list[int], n: int):
            body = {"model": model, "prompt": p, "max_tokens": n, "min_tokens": n, "ignore_eos": True,
                    "temperature": 0}
            async with sem:
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/completions", json=body)
                lat.append(time.perf_counter() - t)
                codes.append(r.status_code)
        t = time.perf_counter()
        await asyncio.gather(*(one(p, n) for p, n in zip(prompts, counts)))
        return time.perf_counter() - t, lat, codes


def vllm_main(args, questions: list[str]) -> None:
    """Ours (uvicorn + S1Service on AsyncLLM) vs vLLM's OpenAI server, same prompts and token counts."""
    import subprocess
    import sys
    import threading

    import uvicorn

    from components.common.network import free_port
    from components.serving.service import S1Service, build_api
    levels = [int(c) for c in (args.concurrency or "16,64").split(",")]
    port, holder = free_port(), {}

    def run():
        async def serve():
            svc = S1Service(args.model, model_name="s1flow-tiny", engine="vllm", max_batch_size=max(levels),
                            default_answer_tokens=16, unlimited_thinking_tokens=max(args.budget, 64),
                            max_queued_requests=max(levels) * 4 + args.malformed)
            holder["svc"] = svc
            server = uvicorn.Server(uvicorn.Config(build_api(svc), host="127.0.0.1", port=port, log_level="error"))
            holder["server"] = server
            await server.serve()
        asyncio.run(serve())

    threading.Thread(target=run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    _wait_up(url)
    svc = holder["svc"]
    from components.serving.protocol import ChatRequest
    prompts = [svc.chat_prompt(ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": q}]}))
               for q in questions]
    ours = {}
    for c in levels:
        asyncio.run(_load(url, "s1flow-tiny", questions[:4], args.budget, 4, 0))  # warm-up
        counts: dict[str, int] = {}
        ours[c] = asyncio.run(_load(url, "s1flow-tiny", questions, args.budget, c, args.malformed, counts))
        ours[c] = (*ours[c], counts)
    holder["server"].should_exit = True
    time.sleep(2)
    svc.engine.shutdown()

    vport = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model,
                             "--served-model-name", "tiny", "--port", str(vport), "--dtype", "float32",
                             "--max-num-seqs", str(max(levels)), "--gpu-memory-utilization", "0.2",
                             "--enable-prefix-caching"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vurl = f"http://127.0.0.1:{vport}"
        _wait_up(vurl, proc=proc)
        for c in levels:
            wall, lat, codes, bad_codes, counts = ours[c]
            pairs = [(p, counts[q]) for p, q in zip(prompts, questions) if counts.get(q)]
            asyncio.run(_vllm_load(vurl, "tiny", prompts[:4], [8] * 4, 4))  # warm-up
            vwall, vlat, vcodes = asyncio.run(_vllm_load(vurl, "tiny", [p for p, _ in pairs], [n for _, n in pairs], c))
            tokens = sum(n for _, n in pairs)
            print(f"concurrency {c}: {len(questions)} requests, budget {args.budget}, +{args.malformed} malformed "
                  f"mixed in (ours only)")
            print(f"  ours (forcing): {tokens / wall:,.0f} tok/s ({wall:.1f}s incl. malformed), p50 "
                  f"{statistics.median(lat):.2f}s p99 {_pct(lat, 0.99):.2f}s; good non-2xx "
                  f"{sum(1 for x in codes if not 200 <= x < 300)}; malformed codes {sorted(set(bad_codes))}")
            print(f"  vllm api_server (same tokens): {tokens / vwall:,.0f} tok/s ({vwall:.1f}s), p50 "
                  f"{statistics.median(vlat):.2f}s p99 {_pct(vlat, 0.99):.2f}s; non-2xx "
                  f"{sum(1 for x in vcodes if not 200 <= x < 300)}")
            print(f"  -> throughput ratio ours / vllm {vwall / wall:.3f}x (goal >= 1.0x)")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny/sft")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", default=None, help="hf: one level (default 16); vllm: list (default 16,64)")
    ap.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--malformed", type=int, default=40)
    ap.add_argument("--batch-wait", type=float, default=None, help="serve.batch_wait_timeout_s override")
    args = ap.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"--model {args.model} not found: run `make demo` first")
    if args.engine == "vllm":
        return vllm_main(args, [q.question for q in generate_heldout(99, args.requests, load_config(
            "params.yaml").pool.domains, 3, 6)])
    import torch

    from components.inference.hf_engine import HFEngine
    args.concurrency = int(args.concurrency or 16)
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
    static = time.perf_counter() - t
    t = time.perf_counter()
    _rolling(engine, prompts, spec)
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
    print(f"in-process, static batches of {args.concurrency} (generate_forced, as evaluation runs): "
          f"{args.requests / static:.2f} req/s ({static:.1f}s)")
    print(f"in-process, continuous batching (the engine loop a replica runs, every prompt queued at once): "
          f"{args.requests / inproc:.2f} req/s ({inproc:.1f}s)")
    print(f"serve: {args.requests / wall:.2f} req/s ({wall:.1f}s incl. malformed) "
          f"-> ratio to continuous in-process {inproc / wall:.3f}x (goal >= 0.9x), to static {static / wall:.3f}x")
    print(f"server batches: {health['batches']} (mean size {health['mean_batch_size']})")
    print(f"latency p50 {statistics.median(lat):.2f}s  p99 {lat[int(0.99 * (len(lat) - 1))]:.2f}s")
    print(f"good requests non-2xx: {non2xx} (goal 0); malformed status codes: "
          f"{sorted(set(bad_codes))} (all 4xx: {all(400 <= c < 500 for c in bad_codes)})")


if __name__ == "__main__":
    main()
