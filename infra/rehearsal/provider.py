"""A local stand-in for the rehearsal's two API providers, with faults injected at set rates.

- ``POST /v1beta/openai/chat/completions``: the teacher, in the shape of Gemini's OpenAI-compatible endpoint
  (https://ai.google.dev/gemini-api/docs/openai). Thoughts come back only when the request asks for them with
  ``extra_body`` -> ``google.thinking_config.include_thoughts`` (the REST body nests it under ``"extra_body"``, the
  OpenAI SDK's ``extra_body`` puts ``"google"`` at the top level: both are read), and then inside
  ``message.content`` as a ``<thought>...</thought>`` block before the answer; without it the content is the
  answer alone. The traces are the programmatic teacher's (components/distill/teachers/programmatic.py).
- ``POST /v1/chat/completions``: the LLM domain classifier, answering the MSC code of the question, and the
  judge (the same model, asked with components/curation/judge.py's ``JUDGE_INSTRUCTION`` as the system prompt):
  a short explanation, then a last line Yes or No. Its rule: the attempt's final answer (its last ``\boxed{}``,
  else its last "Answer:" line, else its last line) matches the reference's (its last ``\boxed{}``, else its
  last number) by math-verify.
- ``GET /stats``: calls and faults; ``GET /billed``: per question (:func:`question_key` of its text), how many
  answers were billed (the rehearsal's "nothing paid twice" check reads it, keying the pool's questions with the
  same function).

Faults: a 429 ``RESOURCE_EXHAUSTED`` (Gemini's error body) at ``--rate-429``, a call held ``--hold-s`` seconds
(past the client's timeout) at ``--rate-timeout``; drawn from a seeded generator, so a run's faults repeat.

    python infra/rehearsal/provider.py --port 27431 --rate-429 0.15 --rate-timeout 0.05
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from components.common.grading import extract_answer, grade, last_boxed
from components.config import TeacherConfig
from components.curation.judge import JUDGE_INSTRUCTION
from components.data.domains import classify
from components.distill.teachers.programmatic import ProgrammaticTeacher
from components.records import Question

TEACHER_PATH = "/v1beta/openai/chat/completions"
CLASSIFIER_PATH = "/v1/chat/completions"


def wants_thoughts(body: dict[str, Any]) -> bool:
    """Whether a request asks for thoughts (Gemini's ``google.thinking_config.include_thoughts``)."""
    for google in ((body.get("extra_body") or {}).get("google"), body.get("google")):
        if isinstance(google, dict) and (google.get("thinking_config") or {}).get("include_thoughts"):
            return True
    return False


def completion(model: str, content: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A chat completion as Gemini's OpenAI-compatible endpoint returns it (non-streaming)."""
    return {"id": hashlib.sha1(f"{time.time_ns()}".encode()).hexdigest()[:24], "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def rate_limited() -> dict[str, Any]:
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                      "message": "Resource has been exhausted (e.g. check quota)."}}


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_ATTEMPT, _REFERENCE = "\n\n## Attempt\n", "\n\n## Correct answer\n"


def is_judge(messages: list[dict]) -> bool:
    return any(m.get("role") == "system" and m.get("content") == JUDGE_INSTRUCTION for m in messages)


def reference_answer(reference: str) -> str:
    """The final answer of a reference solution: its last ``\\boxed{}``, else its last number ('' if none)."""
    boxed = last_boxed(reference)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(reference)
    return numbers[-1] if numbers else ""


def verdict_reply(user: str) -> tuple[bool, str]:
    """The judge's verdict on its user message (problem, attempt, correct answer, as judge_messages writes it)
    and its reply: an explanation, then Yes or No on the last line."""
    rest = user.partition(_ATTEMPT)[2]
    attempt, _, reference = rest.rpartition(_REFERENCE)
    given, expected = extract_answer(attempt), reference_answer(reference)
    right = bool(given and expected) and grade(given, expected)
    return right, (f"The attempt's final answer is {given or '(none)'}; the correct answer's is "
                   f"{expected or '(none)'}. They {'agree' if right else 'differ'}.\n{'Yes' if right else 'No'}")


def user_text(messages: list[dict]) -> str:
    """The last user message's text ('' when there is none or it is not text)."""
    text = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return text if isinstance(text, str) else ""


def question_text(text: str) -> str:
    """The question a user message asks: without the classifier's "Question: " prefix and surrounding space."""
    return text.strip().removeprefix("Question: ").strip()


def question_key(text: str) -> str:
    """The billing key of a question: a hash of :func:`question_text` of the text sent (a teacher sends the
    pool's question as it is), so a pool row and the request that asked it have the same key."""
    return hashlib.sha256(question_text(text).encode()).hexdigest()[:16]


def question_of(messages: list[dict]) -> str:
    return question_text(user_text(messages))


class Provider:
    """The answers and the fault schedule (thread-safe: the HTTP server runs a thread per request)."""

    def __init__(self, rate_429: float, rate_timeout: float, hold_s: float, seed: int = 0):
        self.rate_429, self.rate_timeout, self.hold_s = rate_429, rate_timeout, hold_s
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.teacher = ProgrammaticTeacher(TeacherConfig(kind="programmatic", slip_probability=0.15, seed=103))
        self.counts: Counter = Counter()
        self.billed: Counter = Counter()  # question hash -> answers billed (200s with usage)

    def fault(self) -> str:
        with self.lock:
            draw = self.rng.random()
        return "429" if draw < self.rate_429 else "timeout" if draw < self.rate_429 + self.rate_timeout else ""

    def teach(self, body: dict[str, Any]) -> dict[str, Any]:
        sent = user_text(body.get("messages") or [])
        text, qid = question_text(sent), question_key(sent)
        trace = self.teacher.solve(Question(id=qid, source="provider", question=text, answer=""))
        if not trace.ok:
            content, thinking = "I cannot solve this question.", ""
        else:
            thinking, content = trace.thinking, trace.answer
        if thinking and wants_thoughts(body):
            content = f"<thought>{thinking}</thought>{content}"
        with self.lock:
            self.billed[qid] += 1
            self.counts["teacher_answers"] += 1
        return completion(body.get("model", ""), content, trace.prompt_tokens or 1, trace.completion_tokens or 1)

    def classify(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        if is_judge(messages):
            return self.judge(body)
        text = question_of(messages)
        with self.lock:
            self.counts["classifier_answers"] += 1
        return completion(body.get("model", ""), classify(text), len(text.split()) + 200, 1)

    def judge(self, body: dict[str, Any]) -> dict[str, Any]:
        user = next((m.get("content", "") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
        user = user if isinstance(user, str) else ""
        right, reply = verdict_reply(user)
        with self.lock:
            self.counts["judge_answers"] += 1
            self.counts["judge_yes" if right else "judge_no"] += 1
        return completion(body.get("model", ""), reply, len(user.split()) + 150, len(reply.split()))

    def billed_copy(self) -> dict[str, int]:
        """Question key -> answers billed, copied under the lock (sent after it is released)."""
        with self.lock:
            return dict(self.billed)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counts, "questions_billed": len(self.billed),
                    "questions_billed_twice": sum(1 for n in self.billed.values() if n > 1)}


def handler(provider: Provider):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the driver reads /stats
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): as a provider sees it
                pass

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._send(200, provider.stats())
            elif self.path == "/billed":  # question key -> answers billed; a slow reader holds up no request
                self._send(200, provider.billed_copy())
            else:
                self._send(404, {"error": {"code": 404, "message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            route = {TEACHER_PATH: provider.teach, CLASSIFIER_PATH: provider.classify}.get(self.path)
            if route is None:
                self._send(404, {"error": {"code": 404, "message": f"no route {self.path}"}})
                return
            kind = "teacher" if route == provider.teach else "judge" if is_judge(body.get("messages") or []) \
                else "classifier"
            with provider.lock:
                provider.counts[f"{kind}_calls"] += 1
            fault = provider.fault()
            if fault:
                with provider.lock:
                    provider.counts[f"{kind}_{fault}s"] += 1
            if fault == "429":
                self._send(429, rate_limited())
                return
            if fault == "timeout":
                time.sleep(provider.hold_s)
            self._send(200, route(body))

    return Handler


def serve(port: int, provider: Provider, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), handler(provider))
    server.daemon_threads = True
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=27431)
    ap.add_argument("--rate-429", type=float, default=0.15)
    ap.add_argument("--rate-timeout", type=float, default=0.05)
    ap.add_argument("--hold-s", type=float, default=3.0, help="how long a timed-out call is held")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    server = serve(a.port, Provider(a.rate_429, a.rate_timeout, a.hold_s, a.seed))
    print(f"provider on http://127.0.0.1:{a.port} (429 at {a.rate_429:.0%}, timeouts at {a.rate_timeout:.0%})",
          flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
