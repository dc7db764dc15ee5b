"""A local chat-completions server for the LLM judge's tests: it answers in the OpenAI chat shape what a test's
``reply(attempt, reference)`` returns (the reply's text, or an HTTP status for a failed call) and records every
attempt it was sent.

    with judge_server(lambda attempt, reference: "Same result.\\nYes") as server:
        cfg = DomainConfig(classifier="llm", model="judge", base_url=server.base_url)
        ...; server.attempts  # what the judge was sent
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from tests.support.json_server import json_post_server

ATTEMPT, REFERENCE = "\n\n## Attempt\n", "\n\n## Correct answer\n"


class JudgeServer:
    def __init__(self, base_url: str):
        self.base_url, self.attempts, self.lock = base_url, [], threading.Lock()


@contextmanager
def judge_server(reply: Callable[[str, str], str | int]) -> Iterator[JudgeServer]:
    server = JudgeServer("")

    def handle(body: dict, headers: dict) -> tuple[int, dict]:
        user = body["messages"][-1]["content"]
        attempt, _, reference = user.partition(ATTEMPT)[2].rpartition(REFERENCE)
        with server.lock:
            server.attempts.append(attempt)
        out = reply(attempt, reference)
        if isinstance(out, int):
            return out, {"error": {"code": out, "message": "failed"}}
        return 200, {"id": "chatcmpl-judge", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": out}}],
                     "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}

    with json_post_server(handle) as root:
        server.base_url = f"{root}/v1"
        yield server
