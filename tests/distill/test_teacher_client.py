"""API teachers over the chat client: failures recorded with the raw text and the tokens billed, keys only in
the header."""
import asyncio
import json
from pathlib import Path

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


PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures/providers"
QUESTION = Question(id="q", source="t", question="What is 17 + 25?", answer="42")


def _fixture_teacher(name, **cfg):
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, text=(PROVIDERS / name).read_text())
    teacher = ApiTeacher(TeacherConfig(model="m", base_url="http://teacher.test/v1", max_retries=0, **cfg),
                         transport=httpx.MockTransport(handler))
    return teacher, seen


def test_gemini_teacher_asks_for_thoughts_and_reads_them_from_the_content():
    """Gemini's OpenAI-compatible endpoint sends thought summaries only when asked, inside the content as a
    leading <thought> block (fixture in the provider's shape): the request asks, the trace splits them off."""
    teacher, seen = _fixture_teacher("gemini_thoughts.json", kind="gemini",
                                     extra_body={"extra_body": {"google": {"thinking_config": {"thinking_level": "high"}}}})
    t = asyncio.run(teacher.attempt(QUESTION))
    assert seen[0]["extra_body"] == {"google": {"thinking_config": {"include_thoughts": True, "thinking_level": "high"}}}
    assert t.ok and t.thinking.startswith("**Setting up the sum**") and t.thinking.endswith("consistent.")
    assert t.answer == "The sum is 42.\n\nAnswer: 42" and "<thought>" not in t.answer + t.thinking
    assert (t.prompt_tokens, t.completion_tokens) == (21, 371)


def test_deepseek_reasoning_content_is_the_thinking():
    teacher, seen = _fixture_teacher("deepseek_reasoning.json", kind="openai")
    t = asyncio.run(teacher.attempt(QUESTION))
    assert "extra_body" not in seen[0]  # only gemini is asked for thoughts this way
    assert t.ok and t.thinking.startswith("We need 17 + 25.") and t.answer == "The sum is 42.\n\nAnswer: 42"


def test_a_gemini_response_without_thoughts_is_a_failed_trace_naming_the_cause():
    """What Gemini sends when thoughts were not returned: an answer alone. Not an empty trace (quality would
    drop every one, silently): a failure that says what is missing and where it was looked for."""
    teacher, _ = _fixture_teacher("gemini_no_thoughts.json", kind="gemini")
    t = asyncio.run(teacher.attempt(QUESTION))
    assert not t.ok and t.thinking == "" and "no thinking in the response" in t.error
    assert "include_thoughts" in t.error and "teacher.model (m)" in t.error and t.raw.startswith("The sum is 42.")
    optional, _ = _fixture_teacher("gemini_no_thoughts.json", kind="gemini", require_thinking=False)
    assert asyncio.run(optional.attempt(QUESTION)).ok
    required, _ = _fixture_teacher("gemini_no_thoughts.json", kind="openai", require_thinking=True)
    assert "reasoning_content" in asyncio.run(required.attempt(QUESTION)).error


@pytest.mark.parametrize("content,thinking,answer", [
    ("<thought>a</thought><thought>b</thought>Answer: 1", "a\n\nb", "Answer: 1"),
    ("<think>\nx\n</think>\n\nAnswer: 2", "x", "Answer: 2"),
    ("<thought>cut off mid-thought", "cut off mid-thought", ""),
    ("Answer: 3 (no <thought> here)", "", "Answer: 3 (no <thought> here)"),
])
def test_leading_thinking_blocks_are_split_off(content, thinking, answer):
    from components.common.chat_client import split_thinking
    assert split_thinking(content) == (thinking, answer)


def test_a_key_quoted_by_the_http_stack_is_redacted_and_a_local_protocol_error_is_not_retried(monkeypatch):
    """An HTTP-stack error that quotes the Authorization header (h11's ``Illegal header value b'Bearer …'``)
    reaches the trace redacted, error and raw alike, and is not retried as if transient."""
    monkeypatch.setenv("S1FLOW_TEST_TEACHER_KEY", "sk-live-keyvalue-zyxw")
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.LocalProtocolError("Illegal header value b'Bearer sk-live-keyvalue-zyxw'")
    cfg = TeacherConfig(kind="openai", model="m", base_url="http://teacher.test/v1",
                        api_key_env="S1FLOW_TEST_TEACHER_KEY", max_retries=3, backoff_base_s=0.001)
    t = asyncio.run(ApiTeacher(cfg, transport=httpx.MockTransport(handler)).attempt(
        Question(id="q", source="t", question="2+2?", answer="4")))
    dumped = t.model_dump_json()
    assert not t.ok and "LocalProtocolError" in t.error and "[REDACTED]" in t.error
    assert "keyvalue-zyxw" not in dumped and "sk-live" not in dumped
    assert len(calls) == 1 and t.attempts == 1


def test_an_unexpected_exception_quoting_a_key_is_redacted(monkeypatch):
    from components.distill.teachers import unexpected_failure
    q = Question(id="q", source="t", question="2+2?", answer="4")
    t = unexpected_failure(q, "m", RuntimeError("headers {'Authorization': 'Bearer tok-9f8e7d6c5b'} key=tok-9f8e7d"),
                           secrets=("tok-9f8e7d",))
    assert "tok-9f8e7d" not in t.model_dump_json() and "[REDACTED]" in t.error


@pytest.mark.parametrize("key", ["sk-abc123\n", " sk-abc123", "sk-abc\r\n123", "sk-ab c123", "sk-abc\x7f", "sk-abcé"])
def test_a_malformed_key_is_refused_before_the_first_call_naming_the_setting(monkeypatch, tmp_path, key):
    from components.config import ConfigError
    from components.distill.distillation import distill_pool
    monkeypatch.setenv("S1FLOW_TEST_TEACHER_KEY", key)
    cfg = TeacherConfig(kind="openai", model="m", base_url="http://teacher.test/v1", api_key_env="S1FLOW_TEST_TEACHER_KEY")
    with pytest.raises(ConfigError, match=r"teacher\.api_key_env: the key in \$S1FLOW_TEST_TEACHER_KEY") as err:
        distill_pool([Question(id="q", source="t", question="2+2?", answer="4")], cfg, tmp_path)
    assert "abc" not in str(err.value)
    assert not list(tmp_path.glob("shard-*"))  # refused before the lock, Ray or any call
    with pytest.raises(ValueError, match=r"teacher\.api_key_env"):
        ApiTeacher(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
