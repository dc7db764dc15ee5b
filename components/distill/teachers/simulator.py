"""A local OpenAI-compatible teacher server, with latency and fault injection.

It answers chat completions with the programmatic teacher (``reasoning_content``
holds the trace, ``content`` the answer) and MSC classification prompts with the
deterministic classifier. For dry runs of the distillation job, its tests and
benchmarks: ``--latency-ms`` adds a fixed delay per call, ``--fault-rate`` makes
that share of calls answer 429, 500, hang past any sane timeout, or return
malformed JSON (one of the four, seeded). ``--faults`` picks other kinds:
``bad_usage`` (a good answer whose ``usage`` is not an object) and
``billed_malformed`` (unusable content, but billed: ``usage`` is reported).

    python -m components.distill.teachers.simulator --port 8765 --latency-ms 200 --fault-rate 0.1
    GET /stats -> {"calls": n, "faults": {...}, "by_question": {question_text: calls}}
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import subprocess
import sys
import time
from collections import Counter
from typing import Optional

from components.common.waiting import wait_http
from components.config import TeacherConfig
from components.data.domains import classify
from components.distill.teachers.programmatic import ProgrammaticTeacher
from components.records import Question

FAULTS = ("429", "500", "hang", "malformed")
MORE_FAULTS = ("bad_usage", "billed_malformed")
CLASSIFY_MARKER = "Mathematics Subject Classification"


def build_app(latency_s: float = 0.0, fault_rate: float = 0.0, seed: int = 0, hang_s: float = 3600.0,
              faults: tuple[str, ...] = FAULTS):
    from aiohttp import web

    teacher = ProgrammaticTeacher(TeacherConfig(slip_probability=0.15))
    rng = random.Random(seed)
    stats = {"calls": 0, "faults": Counter(), "by_question": Counter()}

    def answer(messages: list[dict]) -> dict:
        text = messages[-1]["content"]
        if any(CLASSIFY_MARKER in m["content"] for m in messages):
            question = text.split("Question:", 1)[-1].strip()
            return {"content": classify(question), "reasoning_content": ""}
        qid = hashlib.sha256(text.encode()).hexdigest()[:12]
        trace = teacher.solve(Question(id=qid, source="simulator", question=text, answer=""))
        if not trace.ok:
            return {"content": "I cannot solve this.", "reasoning_content": ""}
        return {"content": trace.answer, "reasoning_content": trace.thinking}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        messages = body["messages"]
        stats["calls"] += 1
        stats["by_question"][messages[-1]["content"]] += 1
        if latency_s:
            await asyncio.sleep(latency_s)
        if fault_rate and rng.random() < fault_rate:
            fault = rng.choice(faults)
            stats["faults"][fault] += 1
            if fault == "429":
                return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                         headers={"Retry-After": "0"})
            if fault == "500":
                return web.json_response({"error": {"message": "internal error"}}, status=500)
            if fault == "hang":
                await asyncio.sleep(hang_s)
            if fault in ("malformed", "hang"):
                return web.Response(text='{"choices": [{"message": {"content": "trunc',
                                    content_type="application/json")
        else:
            fault = None
        msg = answer(messages)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        completion = len((msg["content"] + " " + msg["reasoning_content"]).split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion}
        if fault == "bad_usage":
            usage = "n/a"
        if fault == "billed_malformed":
            msg = {"content": ["not", "text"], "reasoning_content": ""}
        return web.json_response({
            "id": f"chatcmpl-{stats['calls']}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "simulator"),
            "choices": [{"index": 0, "message": {"role": "assistant", **msg}, "finish_reason": "stop"}],
            "usage": usage})

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({"calls": stats["calls"], "faults": dict(stats["faults"]),
                                  "by_question": dict(stats["by_question"])})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=16 * 2**20)
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/stats", get_stats), web.get("/health", health)])
    return app


class Simulator:
    """The simulator in a child process (so it never competes with the caller's event loop)."""

    def __init__(self, port: int, latency_ms: float = 0, fault_rate: float = 0.0, seed: int = 0,
                 faults: tuple[str, ...] = FAULTS):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "components.distill.teachers.simulator", "--port", str(port),
             "--latency-ms", str(latency_ms), "--fault-rate", str(fault_rate), "--seed", str(seed),
             "--faults", ",".join(faults)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_http(self.url + "/health", self.proc, timeout=60,
                  why=lambda: self.proc.stderr.read().decode()[-2000:] if self.proc.poll() is not None else "")

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stats(self) -> dict:
        import httpx
        return httpx.get(self.url + "/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[list[str]] = None) -> None:
    from aiohttp import web
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {FAULTS + MORE_FAULTS}")
    a = ap.parse_args(argv)
    faults = tuple(f for f in a.faults.split(",") if f)
    if unknown := set(faults) - set(FAULTS + MORE_FAULTS):
        ap.error(f"--faults: unknown {sorted(unknown)}")
    web.run_app(build_app(a.latency_ms / 1000, a.fault_rate, a.seed, faults=faults), host=a.host, port=a.port,
                print=lambda *_: None, access_log=None)


if __name__ == "__main__":
    main()
