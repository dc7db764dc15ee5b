"""API teachers over the chat client: failures recorded with the raw text and the tokens billed, keys only in
the header."""
import asyncio

import httpx
import pytest

from components.config import TeacherConfig
from components.distill.teachers import ApiTeacher
from components.records import Question
from tests.support.chat import chat_body


def test_teacher_records_failures_with_raw_text_and_key_only_in_the_header(monkeypatch):
    monkeypatch.setenv("S1FLOW_TEST_TEACHER_KEY", "sk-secret")
    seen = []

    def handler(request):
        seen.append((request.headers.get("authorization"), request.content.decode()))
        return httpx.Response(200, text='{"choices": [{"message": {"content": "trunc')
    cfg = TeacherConfig(kind="openai", model="m", base_url="http://teacher.test/v1", api_key_env="S1FLOW_TEST_TEACHER_KEY")
    teacher = ApiTeacher(cfg, transport=httpx.MockTransport(handler))
    t = asyncio.run(teacher.attempt(Question(id="q1", source="t", question="What is 2+2?", answer="4")))
    assert not t.ok and "malformed response" in t.error and t.raw.startswith('{"choices"')
    auth, payload = seen[0]
    assert auth == "Bearer sk-secret" and "sk-secret" not in payload and "sk-secret" not in t.model_dump_json()


def test_truncated_generation_keeps_no_answer():
    def handler(request):
        return httpx.Response(200, text=chat_body("Answer: 4", reasoning="long...", finish="length"))
    cfg = TeacherConfig(kind="vllm", model="m", base_url="http://teacher.test/v1")
    t = asyncio.run(ApiTeacher(cfg, transport=httpx.MockTransport(handler)).attempt(
        Question(id="q", source="t", question="2+2?", answer="4")))
    assert t.ok and t.answer == ""  # the quality filter drops it as truncated_trace


@pytest.mark.parametrize("error", [httpx.TooManyRedirects("Exceeded maximum allowed redirects."),
                                   httpx.DecodingError("bad gzip"), RuntimeError("a bug in a transport")])
def test_any_error_of_a_call_becomes_a_recorded_failure_never_an_exception(error):
    def handler(request):
        raise error
    cfg = TeacherConfig(kind="vllm", model="m", base_url="http://teacher.test/v1", max_retries=0)
    t = asyncio.run(ApiTeacher(cfg, transport=httpx.MockTransport(handler)).attempt(
        Question(id="q", source="t", question="2+2?", answer="4")))
    assert not t.ok and type(error).__name__ in t.error and t.raw


def test_a_teacher_failure_carries_every_attempt_billed():
    """A 200 with unusable content but a usage block is billed: the failed trace counts it, every attempt's."""
    billed_bad = '{"choices": [{"message": {"content": ["x"]}}], "usage": {"prompt_tokens": 7, "completion_tokens": 900}}'

    def always_billed(request):
        return httpx.Response(200, text=billed_bad)
    tcfg = TeacherConfig(kind="vllm", model="m", base_url="http://teacher.test/v1", max_retries=2)
    t = asyncio.run(ApiTeacher(tcfg, transport=httpx.MockTransport(always_billed)).attempt(
        Question(id="q", source="t", question="2+2?", answer="4")))
    assert not t.ok and (t.prompt_tokens, t.completion_tokens) == (7, 900)  # one attempt (not retryable), billed

    def billed_502(request):
        return httpx.Response(502, text=billed_bad)
    t = asyncio.run(ApiTeacher(tcfg.model_copy(update={"backoff_base_s": 0.001, "backoff_max_s": 0.001}),
                               transport=httpx.MockTransport(billed_502)).attempt(
        Question(id="q", source="t", question="2+2?", answer="4")))
    assert not t.ok and t.attempts == 3 and (t.prompt_tokens, t.completion_tokens) == (21, 2700)
