"""A local chat-completions server in DeepSeek's shape (https://api.deepseek.com, thinking mode): the chain of
thought in ``message.reasoning_content`` beside ``content``, reasoning tokens counted in
``usage.completion_tokens_details`` (tests/fixtures/providers/deepseek_reasoning.json). Thinking is on unless the
request turns it off with ``{"thinking": {"type": "disabled"}}`` (api-docs.deepseek.com/guides/thinking_mode).
``reply(question)`` gives (reasoning, answer); every request body is recorded.

    with deepseek_server(lambda q: ("We need 17 + 25 ...", "Answer: 42")) as server:
        cfg = TeacherConfig(kind="openai", base_url=server.base_url, ...); server.requests  # what was sent
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from tests.support.json_server import json_post_server


class DeepSeekServer:
    def __init__(self, base_url: str):
        self.base_url, self.requests, self.headers, self.lock = base_url, [], [], threading.Lock()


@contextmanager
def deepseek_server(reply: Callable[[str], tuple[str, str]]) -> Iterator[DeepSeekServer]:
    server = DeepSeekServer("")

    def handle(body: dict, headers: dict) -> tuple[int, dict]:
        with server.lock:
            server.requests.append(body)
            server.headers.append(headers)
        reasoning, answer = reply(body["messages"][-1]["content"])
        thinking = (body.get("thinking") or {}).get("type", "enabled") == "enabled"
        message = {"role": "assistant", "content": answer, **({"reasoning_content": reasoning} if thinking else {})}
        reasoning_tokens = len(reasoning.split()) if thinking else 0
        completion = reasoning_tokens + len(answer.split())
        prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return 200, {"id": "3f1c2a9e-local", "object": "chat.completion", "created": 1796531200,
                     "model": body["model"],
                     "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion,
                               "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
                               "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": prompt},
                     "system_fingerprint": "fp_local"}

    with json_post_server(handle) as root:
        server.base_url = root
        yield server
