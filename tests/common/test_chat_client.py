"""The chat client under faults: parsing, retries with backoff, limits, usage billed on every attempt."""
import asyncio
import json
import random

import httpx
import pytest

from components.common.chat_client import ApiError, ChatClient, backoff_delay, parse_chat_response
from components.config import ApiClientConfig
from tests.support.chat import chat_body


def test_reasoning_from_field_or_think_block():
    r = parse_chat_response(chat_body("Answer: 4", reasoning="2+2 is 4"))
    assert (r.reasoning, r.content, r.prompt_tokens, r.completion_tokens) == ("2+2 is 4", "Answer: 4", 10, 20)
    r = parse_chat_response(chat_body("<think>\n2+2=4\n</think>\nAnswer: 4"))
    assert (r.reasoning, r.content) == ("2+2=4", "Answer: 4")
    r = parse_chat_response(json.dumps({"choices": [{"message": {"content": "x", "reasoning": "r"}}]}))
    assert r.reasoning == "r" and r.completion_tokens > 0  # no usage: estimated


@pytest.mark.parametrize("body", ['{"choices": [{"message": {"content": "trunc', '{"choices": []}', '[1]',
                                  '{"choices": [{"message": {"content": 5}}]}'])
def test_malformed_bodies_raise_with_the_raw_text(body):
    with pytest.raises(ApiError, match="malformed response") as e:
        parse_chat_response(body)
    assert e.value.raw == body and not e.value.retryable


def test_backoff_is_exponential_capped_jittered_and_respects_retry_after():
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, rng, None) for a in range(6) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    first, fifth = delays[:200], delays[800:1000]
    assert max(first) <= 1.0 and max(fifth) > 4.0  # grows with the attempt, capped
    assert backoff_delay(0, 1.0, 8.0, rng, retry_after=5.0) >= 5.0


def _client(handler, cfg=None, sleeps=None, **kw):
    cfg = cfg or ApiClientConfig(model="m", base_url="http://teacher.test/v1", max_retries=3, backoff_base_s=0.5)

    async def sleep(d):
        sleeps.append(d) if sleeps is not None else None
    return ChatClient(cfg, transport=httpx.MockTransport(handler), sleep=sleep, **kw)


def test_retries_429_5xx_and_timeouts_then_succeeds():
    calls, sleeps = [], []
    script = [httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(503), "timeout",
              httpx.Response(200, text=chat_body(reasoning="r"))]

    def handler(request):
        calls.append(json.loads(request.content))
        step = script[len(calls) - 1]
        if step == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        return step
    r = asyncio.run(_client(handler, sleeps=sleeps).chat([{"role": "user", "content": "2+2?"}]))
    assert r.content == "Answer: 4" and r.attempts == 4 and len(calls) == 4
    assert len(sleeps) == 3 and sleeps[0] >= 2.0  # Retry-After honoured


def test_client_errors_are_not_retried_and_exhaustion_is_reported():
    calls = []

    def bad_request(request):
        calls.append(1)
        return httpx.Response(400, text='{"error": "bad model"}')
    with pytest.raises(ApiError, match=r"HTTP 400 \(attempt 1 of 4\)") as e:
        asyncio.run(_client(bad_request).chat([{"role": "user", "content": "q"}]))
    assert len(calls) == 1 and "bad model" in e.value.raw

    def always_500(request):
        return httpx.Response(500, text="boom")
    with pytest.raises(ApiError, match=r"HTTP 500 \(attempt 4 of 4\)") as e:
        asyncio.run(_client(always_500).chat([{"role": "user", "content": "q"}]))
    assert e.value.attempts == 4


def test_retry_after_is_capped_by_backoff_max():
    """A gateway's 'Retry-After: 3600' must not park the worker (and its calls) for an hour."""
    sleeps, calls = [], []

    def handler(request):
        calls.append(1)
        return httpx.Response(429, headers={"Retry-After": "3600"}) if len(calls) < 3 else httpx.Response(200, text=chat_body())
    cfg = ApiClientConfig(model="m", base_url="http://teacher.test/v1", max_retries=3, backoff_base_s=0.5,
                          backoff_max_s=5.0)
    r = asyncio.run(_client(handler, cfg=cfg, sleeps=sleeps).chat([{"role": "user", "content": "q"}]))
    assert r.attempts == 3 and sleeps == [5.0, 5.0]  # the floor is honoured up to the cap
    assert backoff_delay(0, 1.0, 8.0, random.Random(0), retry_after=-4) <= 1.0


@pytest.mark.parametrize("usage", ['"n/a"', '[1, 2]', '{"prompt_tokens": "ten", "completion_tokens": 3}',
                                   '{"prompt_tokens": [5], "completion_tokens": 3}',
                                   '{"prompt_tokens": 5, "completion_tokens": -3}'])
def test_a_usage_field_of_the_wrong_type_is_a_malformed_response_with_the_raw_text(usage):
    body = '{"choices": [{"message": {"content": "Answer: 4"}}], "usage": %s}' % usage
    with pytest.raises(ApiError, match="malformed response") as e:
        parse_chat_response(body)
    assert e.value.raw == body


def test_cost_counts_every_attempt_that_reports_usage():
    """A 200 with unusable content but a usage block is billed: a call counts it with every other attempt's."""
    billed_bad = '{"choices": [{"message": {"content": ["x"]}}], "usage": {"prompt_tokens": 7, "completion_tokens": 900}}'
    script = [httpx.Response(502, text=billed_bad), httpx.Response(503, text="busy"),  # billed, retried
              httpx.Response(200, text=chat_body(reasoning="r"))]
    calls = []

    def handler(request):
        calls.append(1)
        return script[len(calls) - 1]
    cfg = ApiClientConfig(model="m", base_url="http://teacher.test/v1", max_retries=3, backoff_base_s=0.01)
    r = asyncio.run(_client(handler, cfg=cfg).chat([{"role": "user", "content": "q"}]))
    assert r.attempts == 3 and (r.prompt_tokens, r.completion_tokens) == (7 + 10, 900 + 20)


def test_a_call_refused_before_it_leaves_gives_its_rate_limit_estimate_back():
    class Refused(RuntimeError):
        pass

    def handler(request):
        raise Refused("not calling: the spend cap is reached")
    cfg = ApiClientConfig(model="m", base_url="http://teacher.test/v1", max_retries=3, tokens_per_minute=60_000)
    client = _client(handler, cfg=cfg)
    bucket = client.limits.tokens
    before = bucket._level
    with pytest.raises(Refused):
        asyncio.run(client.chat([{"role": "user", "content": "2+2? " * 200}]))
    bucket._refill()
    assert bucket._level >= before  # the estimate it reserved is back, not spent on a call never made
