"""OpenAI-compatible request/response shapes with s1's budget fields.

Requests accept the usual OpenAI fields plus ``max_thinking_tokens``,
``min_thinking_tokens``, ``num_waits``, ``wait_strings``, ``final_answer_prefix``
and ``method``; responses put the thinking in ``reasoning_content`` and count it
in ``usage.completion_tokens_details.reasoning_tokens``.
"""
from __future__ import annotations

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.inference.budget_forcing import BudgetSpec, ForcedResult


class APIError(Exception):
    """An error answered with an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, type_: str = "invalid_request_error",
                 code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BudgetFields(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields (logprobs, user, ...) are ignored

    model: str
    max_tokens: Optional[int] = Field(None, gt=0, description="cap on answer tokens")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: Optional[int] = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    max_thinking_tokens: Optional[int] = Field(None, ge=0)
    min_thinking_tokens: int = Field(0, ge=0)
    num_waits: int = Field(0, ge=0, le=64)
    wait_strings: list[str] = Field(default_factory=lambda: ["Wait"], min_length=1)
    final_answer_prefix: str = ""
    method: Literal["budget_forcing"] = "budget_forcing"

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(f"min_thinking_tokens ({self.min_thinking_tokens}) > max_thinking_tokens "
                             f"({self.max_thinking_tokens})")
        if any(not w for w in self.wait_strings):
            raise ValueError("wait_strings must be non-empty strings")
        return self

    def spec(self, default_answer_tokens: int) -> BudgetSpec:
        return BudgetSpec(max_thinking_tokens=self.max_thinking_tokens, min_thinking_tokens=self.min_thinking_tokens,
                          num_waits=self.num_waits, wait_strings=tuple(self.wait_strings),
                          final_answer_prefix=self.final_answer_prefix,
                          max_answer_tokens=self.max_tokens or default_answer_tokens)


class CompletionRequest(BudgetFields):
    prompt: Union[str, list[str]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BudgetFields):
    messages: list[ChatMessage] = Field(min_length=1)


def _usage(prompt_tokens: int, r: ForcedResult) -> dict:
    completion = r.thinking_tokens + r.answer_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": r.thinking_tokens}}


def _meta(r: ForcedResult) -> dict:
    return {"waits_used": r.waits_used, "hit_budget": r.hit_budget, "thinking_tokens": r.thinking_tokens}


def finish_reason(r: ForcedResult, spec: BudgetSpec) -> str:
    return "length" if r.answer_tokens >= spec.max_answer_tokens else "stop"


def completion_response(model: str, results: list[tuple[int, ForcedResult, BudgetSpec]]) -> dict:
    choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                          "completion_tokens_details": {"reasoning_tokens": 0}}
    for i, (ptoks, r, spec) in enumerate(results):
        choices.append({"index": i, "text": r.answer, "reasoning_content": r.thinking, "logprobs": None,
                        "finish_reason": finish_reason(r, spec), "s1": _meta(r)})
        u = _usage(ptoks, r)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            usage[k] += u[k]
        usage["completion_tokens_details"]["reasoning_tokens"] += r.thinking_tokens
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage}


def chat_response(model: str, prompt_tokens: int, r: ForcedResult, spec: BudgetSpec) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r.answer,
                                                 "reasoning_content": r.thinking},
                         "finish_reason": finish_reason(r, spec), "s1": _meta(r)}],
            "usage": _usage(prompt_tokens, r)}


def chat_chunk(chunk_id: str, model: str, delta: dict, finish: Optional[str] = None,
               usage: Optional[dict] = None) -> dict:
    out = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out
