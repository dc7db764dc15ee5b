"""An OpenAI-compatible chat-completions client for batch jobs that spend real money (the distill stage's API
teachers, the filter stage's LLM domain classifier).

Every call goes through the worker's rate limits, has a per-call timeout, and
is retried with exponential backoff and full jitter on 429, 5xx, timeouts and
connection errors (``Retry-After`` honoured, up to ``backoff_max_s``). Anything
else fails at once. A response that is not the JSON we expect, and any other
error of the HTTP stack (too many redirects, a decoding error), raises
:class:`ApiError` with the raw text kept, so the failure is recorded, never
silently dropped. Tokens are counted for every attempt whose response reports
``usage`` (failed attempts too): that is what the provider bills.

Reasoning comes back in ``message.reasoning_content`` (DeepSeek, vLLM),
``message.reasoning`` (some gateways) or as a block leading the content: ``<think>…</think>`` (open models
served raw) or ``<thought>…</thought>`` (Gemini's OpenAI-compatible endpoint, which sends its thought summary
only when the request asks for it: ``gemini`` clients always ask, see :data:`GEMINI_THOUGHTS`). Response shapes
as each provider sends them: tests/fixtures/providers/.

The key is read from the env var named by ``api_key_env`` and refused before the first call when it could not
travel in a header (whitespace, a newline, a non-printable or non-ASCII character): such a key would fail every
call with an HTTP-stack error that quotes the header. Every error text this client raises is passed through
:func:`redact` first, so a key or an ``Authorization`` value never reaches a trace, a shard or a log.

    client = ChatClient(cfg.teacher); result = await client.chat([{"role": "user", "content": q}])
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Protocol

import httpx

from components.common.ratelimit import Limits

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DEFAULT_BASE_URLS = {"gemini": "https://generativelanguage.googleapis.com/v1beta/openai/",
                     "openai": "https://api.openai.com/v1"}
# credentials as an HTTP stack quotes them in an error: header values, query parameters, bare provider keys
_SECRET_CHARS = r"(?!\[REDACTED\])[^'\"\s,;&)}\]\\]+"
_SECRET_PATTERNS = (
    re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*(?:b?['\"])?(?:(?:bearer|basic|token)\s+)?)" + _SECRET_CHARS),
    re.compile(r"(?i)(\bbearer\s+)" + _SECRET_CHARS),
    re.compile(r"(?i)([?&]key=|\b(?:x-goog-api-key|x-api-key|api-key|api_key)['\"]?\s*[:=]\s*(?:b?['\"])?)"
               + _SECRET_CHARS),
    re.compile(r"()\b(?:sk-|AIza)[A-Za-z0-9_\-]{8,}"),
)
REDACTED = "[REDACTED]"
_THINK_BLOCK = re.compile(r"^\s*<(think|thought)>(.*?)(?:</\1>|$)", re.S)
# Gemini's OpenAI-compatible endpoint: the request field that asks for thought summaries (what the OpenAI SDK
# sends for extra_body={"extra_body": {"google": {...}}}; https://ai.google.dev/gemini-api/docs/openai)
GEMINI_THOUGHTS = {"extra_body": {"google": {"thinking_config": {"include_thoughts": True}}}}


class ChatEndpoint(Protocol):
    """What a client reads of its endpoint's settings (``components.config.ApiClientConfig`` has them all)."""

    model: str
    base_url: Optional[str]
    api_key_env: str
    max_tokens: int
    temperature: float
    timeout_s: float
    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    requests_per_minute: Optional[float]
    tokens_per_minute: Optional[float]
    workers: int
    extra_body: dict[str, Any]

    @property
    def calls_per_worker(self) -> int: ...


def redact(text: str, *secrets: str) -> str:
    """``text`` with each of ``secrets`` (and its stripped form) and anything shaped like a credential replaced by
    ``[REDACTED]``: error texts of the HTTP stack quote headers (``Illegal header value b'Bearer sk-…'``)."""
    for secret in secrets:
        for form in {secret, secret.strip(), repr(secret)[1:-1]}:
            if len(form) >= 4:
                text = text.replace(form, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def key_problem(value: str, env: str) -> Optional[str]:
    """Why the key in ``$env`` cannot be sent as a header (never quoting it), or None when it can."""
    if not value:
        return None
    if value != value.strip():
        return f"the key in ${env} starts or ends with whitespace or a newline; store the key alone, without it"
    bad = [c for c in value if not ("!" <= c <= "~")]
    if bad:
        kinds = sorted({"whitespace" if c.isspace() else "a non-ASCII character" if ord(c) > 127
                        else "a control character" for c in bad})
        return (f"the key in ${env} contains {' and '.join(kinds)}, which an HTTP header cannot carry; "
                "check that the variable holds exactly the provider's key")
    return None


class ApiError(Exception):
    """A call that failed for good (after any retries); ``raw`` keeps what came back."""

    def __init__(self, message: str, raw: str = "", retryable: bool = False, retry_after: Optional[float] = None):
        super().__init__(message)
        self.raw, self.retryable, self.retry_after = raw, retryable, retry_after
        self.attempts = 1
        self.prompt_tokens, self.completion_tokens = _billed_usage(raw)  # every attempt's, once the call ends


@dataclass
class ChatResult:
    content: str
    reasoning: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    finish_reason: str = ""


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _token_count(value: Any) -> int:
    """A usage count as the provider sent it; anything but a non-negative whole number is malformed."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"not a token count: {value!r}")
    return int(value)


def _billed_usage(body: str) -> tuple[int, int]:
    """(prompt, completion) tokens a response body reports, (0, 0) when it reports none we can read:
    failed attempts are billed too when the provider says so."""
    if not body or '"usage"' not in body:
        return 0, 0
    try:
        usage = json.loads(body).get("usage")
        return _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))
    except (ValueError, AttributeError, TypeError):
        return 0, 0


def parse_chat_response(body: str) -> ChatResult:
    """The message text and reasoning of one chat-completions response body."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ApiError(f"malformed response ({type(e).__name__}: {e})", raw=body[:20000]) from None
    if not isinstance(content, str):
        raise ApiError("malformed response (message.content is not text)", raw=body[:20000])
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if not reasoning:
        reasoning, content = split_thinking(content)
    usage = data.get("usage") or {}
    try:
        prompt_tokens = _token_count(usage.get("prompt_tokens"))
        completion_tokens = _token_count(usage.get("completion_tokens"))
    except (AttributeError, ValueError) as e:
        raise ApiError(f"malformed response (usage: {e})", raw=body[:20000]) from None
    return ChatResult(content=content.strip(), reasoning=str(reasoning).strip(), prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens or estimate_tokens(str(reasoning) + content),
                      attempts=1, finish_reason=str(choice.get("finish_reason") or ""))


def split_thinking(content: str) -> tuple[str, str]:
    """(thinking, answer) of a content that leads with ``<think>``/``<thought>`` blocks (several blocks are
    joined; one cut off before its closing tag is all thinking); ('', content) when it does not."""
    blocks = []
    while m := _THINK_BLOCK.match(content):
        blocks.append(m.group(2).strip())
        content = content[m.end():]
    return "\n\n".join(b for b in blocks if b), content.lstrip() if blocks else content


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in, nested objects merged key by key (``extra`` wins on a conflict)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _retry_after(response: httpx.Response) -> Optional[float]:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, retry_after: Optional[float]) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor, itself capped at ``cap``
    (a gateway asking for an hour must not park a worker, and its calls, for an hour)."""
    delay = rng.uniform(0, min(cap, base * 2 ** attempt))
    return max(delay, min(max(retry_after or 0.0, 0.0), cap))


class ChatClient:
    """One worker's client: its share of the limits, its own connection pool."""

    def __init__(self, cfg: ChatEndpoint, kind: str = "openai",
                 transport: Optional[httpx.AsyncBaseTransport] = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, seed: int = 0,
                 key_field: str = "api_key_env"):
        base_url = cfg.base_url or DEFAULT_BASE_URLS.get(kind)
        if not base_url:
            raise ValueError(f"base_url: a {kind} client needs the endpoint's base URL (…/v1)")
        self.cfg, self.url = cfg, base_url.rstrip("/") + "/chat/completions"
        self.limits = Limits.share(cfg.requests_per_minute, cfg.tokens_per_minute, cfg.workers)
        self.in_flight = asyncio.Semaphore(cfg.calls_per_worker)
        key = os.environ.get(cfg.api_key_env, "")
        if problem := key_problem(key, cfg.api_key_env):
            raise ValueError(f"{key_field}: {problem}")
        self._key = key  # only for redact(): error texts must never carry it
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(cfg.timeout_s), transport=transport,
                                      limits=httpx.Limits(max_connections=cfg.calls_per_worker + 4))
        self.sleep, self.rng = sleep, random.Random(seed)
        # a gemini client always asks for thought summaries; thinking_level/budget set in extra_body are kept
        self.extra_body = deep_merge(GEMINI_THOUGHTS, cfg.extra_body) if kind == "gemini" else dict(cfg.extra_body)
        self._mean_completion = float(min(cfg.max_tokens, 1024))

    def _payload(self, messages: list[dict]) -> dict[str, Any]:
        return {"model": self.cfg.model, "messages": messages, "max_tokens": self.cfg.max_tokens,
                "temperature": self.cfg.temperature, **self.extra_body}

    async def _once(self, payload: dict) -> ChatResult:
        try:
            return await self._send(payload)
        except ApiError as e:  # error texts quote headers; the key never leaves this client in one
            e.args = (redact(str(e), self._key),)
            e.raw = redact(e.raw, self._key)
            raise

    async def _send(self, payload: dict) -> ChatResult:
        try:
            response = await self.http.post(self.url, json=payload)
        except httpx.TimeoutException:
            raise ApiError(f"timed out after {self.cfg.timeout_s:g} s", retryable=True) from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as e:  # our request is malformed: no retry
            raise ApiError(f"request refused by the HTTP stack ({type(e).__name__}: {e})", raw=repr(e)) from None
        except httpx.TransportError as e:
            raise ApiError(f"connection error: {e!r}", retryable=True) from None
        except httpx.HTTPError as e:  # too many redirects, an invalid URL or header, a decoding error
            raise ApiError(f"request failed ({type(e).__name__}: {e})", raw=repr(e)) from None
        try:
            text = response.text
        except (UnicodeDecodeError, LookupError) as e:
            raise ApiError(f"undecodable response ({type(e).__name__}: {e})",
                           raw=response.content[:20000].decode("utf-8", "replace")) from None
        if response.status_code != 200:
            raise ApiError(f"HTTP {response.status_code}", raw=text[:20000],
                           retryable=response.status_code in RETRYABLE_STATUS, retry_after=_retry_after(response))
        try:
            return parse_chat_response(text)
        except ApiError:
            raise
        except Exception as e:  # a body shape nobody foresaw: a failure with its text, never a crash
            raise ApiError(f"unexpected response ({type(e).__name__}: {e})", raw=text[:20000]) from None

    async def chat(self, messages: list[dict]) -> ChatResult:
        payload = self._payload(messages)
        estimate = sum(estimate_tokens(m["content"]) for m in messages) + self._mean_completion
        billed = [0, 0]  # prompt, completion tokens over every attempt that reported usage
        async with self.in_flight:
            for attempt in range(self.cfg.max_retries + 1):
                await self.limits.acquire(estimate)
                try:
                    result = await self._once(payload)
                except ApiError as e:
                    self.limits.settle(estimate, e.prompt_tokens + e.completion_tokens)
                    billed[0] += e.prompt_tokens
                    billed[1] += e.completion_tokens
                    if not e.retryable or attempt == self.cfg.max_retries:
                        e.args = (f"{e.args[0]} (attempt {attempt + 1} of {self.cfg.max_retries + 1})",)
                        e.attempts = attempt + 1
                        e.prompt_tokens, e.completion_tokens = billed
                        raise
                    await self.sleep(backoff_delay(attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s,
                                                   self.rng, e.retry_after))
                    continue
                except Exception:  # refused before it left (a spend gate): the estimate goes back unused
                    self.limits.settle(estimate, 0)
                    raise
                self.limits.settle(estimate, result.prompt_tokens + result.completion_tokens)
                self._mean_completion = 0.9 * self._mean_completion + 0.1 * result.completion_tokens
                result.attempts = attempt + 1
                result.prompt_tokens += billed[0]
                result.completion_tokens += billed[1]
                return result
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.http.aclose()
