"""OpenAI-compatible request/response shapes with s1's budget fields.

Requests accept the usual OpenAI fields (``n``, ``seed``, ``stop``, ``max_tokens`` /
``max_completion_tokens``, ``stream_options.include_usage``, text content parts)
plus ``max_thinking_tokens``, ``min_thinking_tokens``, ``num_waits``,
``wait_strings``, ``final_answer_prefix``, ``method`` with its settings under their own names
(:mod:`components.serving.methods`) and ``budget: "auto"``. Responses put the
thinking in both ``reasoning_content`` and ``reasoning`` (vLLM's current name) and
count it in ``usage.completion_tokens_details.reasoning_tokens``. Unknown fields are
ignored; known OpenAI features this server does not implement (``logprobs``,
``tools``, ...) get a 400 naming the field instead of being silently dropped. Types
are strict, as OpenAI's are: ``"n": "2"`` or ``"stream": "yes"`` is a 400, not
coerced; a string holding a lone UTF-16 surrogate (``"\\ud800"``) is a 400 too.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from components.common.grading import extract_answer
from components.inference.budget_forcing import BudgetSpec, ForcedResult
from components.inference.methods.base import Kind, Method
from components.inference.methods.registry import AUTO, REFERENCE, SERVED, method_class
from components.inference.methods.voting import vote_groups  # noqa: F401  (re-exported for callers)
from components.serving.methods import label_vote, request_settings

# Per-request size limits, checked at parse time (a bad request never reaches the engine).
MAX_N = 16
MAX_PROMPTS = 64  # prompts x n per completions request
MAX_MESSAGES = 256
MAX_WAIT_STRINGS = 16
MAX_STOP = 4
MAX_STRING_CHARS = 1000  # each wait string / stop string / final answer prefix
MAX_SEED = 2**31 - 1

# OpenAI fields we know and do not implement: value -> is it a request for the feature?
UNSUPPORTED: dict[str, Any] = {
    "logprobs": lambda v: bool(v), "top_logprobs": lambda v: bool(v), "echo": lambda v: bool(v),
    "suffix": lambda v: bool(v), "best_of": lambda v: v not in (None, 1), "tools": lambda v: bool(v),
    "functions": lambda v: bool(v), "tool_choice": lambda v: v not in (None, "none"),
    "function_call": lambda v: v not in (None, "none"), "logit_bias": lambda v: bool(v),
    "response_format": lambda v: v not in (None, {}) and not (isinstance(v, dict) and v.get("type") == "text"),
    "presence_penalty": lambda v: v not in (None, 0, 0.0), "frequency_penalty": lambda v: v not in (None, 0, 0.0),
}


class APIError(Exception):
    """An error answered with an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, type_: str = "invalid_request_error",
                 code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def lone_surrogate(data: Any, path: str = "") -> Optional[str]:
    """The path (``messages.0.content``) of the first string in parsed JSON ``data`` that holds a lone UTF-16
    surrogate (JSON allows ``"\\ud800"``; no tokenizer or UTF-8 writer does), else None."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if isinstance(key, str) and lone_surrogate(key) is not None:  # a field name: named escaped
            key = key.encode("utf-8", "backslashreplace").decode()
            return f"{path}.{key}" if path else key
        if (found := lone_surrogate(value, f"{path}.{key}" if path else str(key))) is not None:
            return found
    return None


def _string(v: str, field: str) -> str:
    if not v:
        raise ValueError(f"{field} must be non-empty strings")
    if len(v) > MAX_STRING_CHARS:
        raise ValueError(f"{field}: each string may be at most {MAX_STRING_CHARS} characters, got {len(v)}")
    return v


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class BudgetFields(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # unknown OpenAI fields (user, ...) are ignored

    model: str
    max_tokens: Optional[int] = Field(None, gt=0, description="cap on answer tokens")
    max_completion_tokens: Optional[int] = Field(None, gt=0, description="cap on answer tokens (newer name)")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Optional[Union[str, list[str]]] = None
    max_thinking_tokens: Optional[int] = Field(None, ge=0)
    min_thinking_tokens: int = Field(0, ge=0)
    num_waits: int = Field(0, ge=0, le=64)
    wait_strings: list[str] = Field(default_factory=lambda: ["Wait"], min_length=1, max_length=MAX_WAIT_STRINGS)
    final_answer_prefix: str = Field("", max_length=MAX_STRING_CHARS)
    method: Literal[SERVED] = Field(REFERENCE, description="the test-time method; its settings go in the body "  # type: ignore[valid-type]
                                    "under their own names")
    budget: Optional[Literal["auto"]] = Field(None, description="auto: thinking stops on answer convergence under "
                                              "max_thinking_tokens")
    max_compute_tokens: Optional[int] = Field(None, gt=0, description="budget auto: cap on thinking + probe tokens")
    max_latency_s: Optional[float] = Field(None, gt=0, le=3600, description="budget auto: no probe after this")
    _settings: Optional[BaseModel] = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data):
        if isinstance(data, dict):
            for name, asks in UNSUPPORTED.items():
                if name in data and asks(data[name]):
                    raise ValueError(f"{name}: not supported by this server; remove the field")
        return data

    @field_validator("wait_strings")
    @classmethod
    def _waits(cls, v: list[str]) -> list[str]:
        return [_string(w, "wait_strings") for w in v]

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        return [_string(s, "stop") for s in stops] or None

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(f"min_thinking_tokens: {self.min_thinking_tokens} > max_thinking_tokens "
                             f"({self.max_thinking_tokens}); lower the minimum or raise the maximum")
        if self.budget == "auto" and "method" in self.model_fields_set and self.method != AUTO:
            raise ValueError(f"budget: auto stops thinking by answer convergence ({AUTO}); leave method out or send "
                             f"method: {AUTO}")
        for cap in ("max_compute_tokens", "max_latency_s"):
            if getattr(self, cap) is not None and self.budget != "auto":
                raise ValueError(f"{cap}: a cap of budget: auto; send budget: auto or remove the field")
        name = self.method_name
        if self.stream and name != REFERENCE:
            if self.kind is Kind.PARALLEL:
                raise ValueError(f"method: {name} answers once all n samples are in; it cannot stream")
            raise ValueError(f"method: {name} decides where thinking ends as it goes and answers once; it cannot "
                             "stream; send stream: false")
        self._settings = request_settings(name, self.model_extra or {})
        if self.seed is not None and self.seed + self.n - 1 > MAX_SEED:
            raise ValueError(f"seed: seed + n - 1 must be <= {MAX_SEED} (sample i uses seed + i)")
        return self

    @property
    def method_name(self) -> str:
        """The method that answers: ``method``, or the convergence controller under ``budget: auto``."""
        return AUTO if self.budget == "auto" else self.method

    @property
    def kind(self) -> Kind:
        return method_class(self.method_name).kind

    @property
    def method_settings(self) -> BaseModel:
        """The method's settings as the body set them (defaults elsewhere)."""
        return self._settings

    @property
    def answer_cap(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    def spec(self, default_answer_tokens: int) -> BudgetSpec:
        return BudgetSpec(max_thinking_tokens=self.max_thinking_tokens, min_thinking_tokens=self.min_thinking_tokens,
                          num_waits=self.num_waits, wait_strings=tuple(self.wait_strings),
                          final_answer_prefix=self.final_answer_prefix,
                          max_answer_tokens=self.answer_cap or default_answer_tokens)


class CompletionRequest(BudgetFields):
    prompt: Union[str, list[str]]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and len(v) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request, got {len(v)}")
        return v

    @model_validator(mode="after")
    def _fanout(self):
        k = 1 if isinstance(self.prompt, str) else len(self.prompt)
        if k * self.n > MAX_PROMPTS:
            raise ValueError(f"prompt: prompts x n = {k * self.n} exceeds {MAX_PROMPTS}; send fewer prompts or a smaller n")
        return self


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BudgetFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)

    @model_validator(mode="after")
    def _stream_n(self):
        if self.stream and self.n != 1:
            raise ValueError("stream: streaming supports n = 1; send n separate requests")
        return self


def apply_stop(r: ForcedResult, stops: Optional[list[str]]) -> tuple[str, bool]:
    """The answer cut at its first stop string (excluded), and whether one was found."""
    if not stops:
        return r.answer, False
    cut = min((i for i in (r.answer.find(s) for s in stops) if i >= 0), default=-1)
    return (r.answer[:cut], True) if cut >= 0 else (r.answer, False)


def finish_reason(r: ForcedResult, spec: BudgetSpec, stopped: bool = False) -> str:
    if stopped:
        return "stop"
    return "length" if r.answer_tokens >= spec.max_answer_tokens else "stop"


def usage(prompt_tokens: int, results: list[ForcedResult]) -> dict:
    """Token counts; ``reasoning_tokens`` is the thinking compute: thinking and any probe tokens (trial answers
    taken in side branches), the latter also in ``completion_tokens_details.probe_tokens`` when there are any."""
    reasoning = sum(r.compute_tokens for r in results)
    completion = reasoning + sum(r.answer_tokens for r in results)
    details = {"reasoning_tokens": reasoning}
    if probes := sum(r.probe_tokens for r in results):
        details["probe_tokens"] = probes
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion,
            "completion_tokens_details": details}


def _meta(r: ForcedResult) -> dict:
    return {"waits_used": r.waits_used, "hit_budget": r.hit_budget, "thinking_tokens": r.thinking_tokens}


def voted(results: list[ForcedResult], spec: BudgetSpec, stops: Optional[list[str]], n: int, method: Method,
          same: Optional[Callable[[str, str], bool]] = None) -> list[tuple[int, dict]]:
    """A parallel method's vote: for each run of ``n`` samples (one prompt), the
    index of the sample that carries the voted answer and the vote's record (samples included). Votes are the
    final answers of the stop-cut texts, grouped by grading equivalence (``same``, default
    :func:`~components.inference.methods.voting.equivalent`) as the offline methods group them; the method's own
    rule (its ``combine``) picks the group and its representative: majority voting the largest group (ties: the
    group seen first) by its first sample, shortest majority votes over mean thinking length by its shortest."""
    if same is None:
        from components.inference.methods.voting import equivalent as same
    out = []
    for start in range(0, len(results), n):
        mine = results[start:start + n]
        cut = [apply_stop(r, stops) for r in mine]
        answers = [extract_answer(t) for t, _ in cut]
        pick, group = label_vote(method, answers, mine, same)
        samples = [{"index": j, "text": t, "reasoning_content": r.thinking, "extracted_answer": a,
                    "finish_reason": finish_reason(r, spec, stopped), **_meta(r)}
                   for j, (r, (t, stopped), a) in enumerate(zip(mine, cut, answers))]
        out.append((start + pick, {"method": method.name, "voted_answer": answers[pick] if group else "",
                                   "votes": len(group), "voted_sample": pick, "samples": samples}))
    return out


def _picks(results: list[ForcedResult], spec: BudgetSpec, stops: Optional[list[str]], n: int,
           vote: Optional[Method], same, records: Optional[list[dict]]) -> list[tuple[int, dict]]:
    if vote is not None:
        return voted(results, spec, stops, n, vote, same)
    return [(i, records[i] if records else {}) for i in range(len(results))]


def completion_response(model: str, prompt_tokens: int, results: list[ForcedResult], spec: BudgetSpec,
                        stops: Optional[list[str]], n: int = 1, vote: Optional[Method] = None,
                        same: Optional[Callable[[str, str], bool]] = None,
                        records: Optional[list[dict]] = None) -> dict:
    """``vote``: a parallel method voting over runs of ``n`` samples per prompt (then one choice per prompt),
    answers grouped by ``same`` (see :func:`voted`). ``records``: what a sequential method did, per result,
    added to each choice's ``s1``."""
    choices = []
    for i, (k, record) in enumerate(_picks(results, spec, stops, n, vote, same, records)):
        r = results[k]
        text, stopped = apply_stop(r, stops)
        choices.append({"index": i, "text": text, "reasoning_content": r.thinking, "reasoning": r.thinking,
                        "logprobs": None, "finish_reason": finish_reason(r, spec, stopped),
                        "s1": {**_meta(r), **record}})
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage(prompt_tokens, results)}


def chat_response(model: str, prompt_tokens: int, results: list[ForcedResult], spec: BudgetSpec,
                  stops: Optional[list[str]], vote: Optional[Method] = None,
                  same: Optional[Callable[[str, str], bool]] = None, records: Optional[list[dict]] = None) -> dict:
    """``vote``: a parallel method voting over all the samples (one choice, the voted one, with the samples in
    ``s1``), answers grouped by ``same`` (see :func:`voted`). ``records``: as in :func:`completion_response`."""
    choices = []
    for i, (k, record) in enumerate(_picks(results, spec, stops, len(results), vote, same, records)):
        r = results[k]
        text, stopped = apply_stop(r, stops)
        choices.append({"index": i, "message": {"role": "assistant", "content": text, "reasoning_content": r.thinking,
                                                "reasoning": r.thinking},
                        "logprobs": None, "finish_reason": finish_reason(r, spec, stopped),
                        "s1": {**_meta(r), **record}})
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage(prompt_tokens * len(results), results)}


def chat_chunk(chunk_id: str, model: str, delta: Optional[dict], finish: Optional[str] = None,
               usage: Optional[dict] = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    out = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out
