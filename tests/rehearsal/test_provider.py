"""The rehearsal's provider answers in Gemini's OpenAI-compatible shape and injects the faults it is told to."""
import json
import threading
import urllib.error
import urllib.request

import pytest

from components.common.network import free_port
from infra.rehearsal.provider import CLASSIFIER_PATH, TEACHER_PATH, Provider, serve, wants_thoughts

QUESTION = "What is 9083 + 9877?"


@pytest.fixture
def url_of():
    servers = []

    def start(provider: Provider) -> str:
        port = free_port()
        server = serve(port, provider)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{port}"
    yield start
    for s in servers:
        s.shutdown()


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_thoughts_only_when_asked_and_then_inside_the_content(url_of):
    url = url_of(Provider(0.0, 0.0, 0.0)) + TEACHER_PATH
    ask = {"model": "m", "messages": [{"role": "user", "content": QUESTION}]}
    _, plain = _post(url, ask)
    _, thought = _post(url, {**ask, "extra_body": {"google": {"thinking_config": {"include_thoughts": True}}}})
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": "Answer: 18960"}
    content = thought["choices"][0]["message"]["content"]
    assert content.startswith("<thought>9083 + 9877\n") and content.endswith("</thought>Answer: 18960")
    assert "reasoning_content" not in thought["choices"][0]["message"]
    assert thought["usage"]["total_tokens"] == thought["usage"]["prompt_tokens"] + thought["usage"]["completion_tokens"]


def test_both_ways_of_asking_for_thoughts_are_read():
    cfg = {"thinking_config": {"include_thoughts": True}}
    assert wants_thoughts({"extra_body": {"google": cfg}}) and wants_thoughts({"google": cfg})
    assert not wants_thoughts({"google": {"thinking_config": {"thinking_budget": 0}}})


def test_faults_at_their_rates_and_the_classifier_answers_a_code(url_of):
    provider = Provider(rate_429=1.0, rate_timeout=0.0, hold_s=0.0)
    base = url_of(provider)
    status, body = _post(base + TEACHER_PATH, {"model": "m", "messages": [{"role": "user", "content": QUESTION}]})
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    provider.rate_429 = 0.0
    status, body = _post(base + CLASSIFIER_PATH, {"model": "c", "messages": [
        {"role": "system", "content": "MSC"}, {"role": "user", "content": f"Question: {QUESTION}"}]})
    assert status == 200 and body["choices"][0]["message"]["content"].isdigit()
    assert provider.stats()["teacher_429s"] == 1 and provider.stats()["questions_billed"] == 0


def test_the_judge_answers_over_http_in_the_providers_shape_ending_in_yes_or_no(url_of):
    """Recognised by the judge's system prompt on the classifier's route: an explanation, then Yes when the
    attempt's final answer matches the reference solution's, No otherwise; read back by the judge's client."""
    import asyncio

    from components.common.chat_client import ChatClient
    from components.config import DomainConfig
    from components.curation.judge import judge, judge_messages
    provider = Provider(0.0, 0.0, 0.0)
    base = url_of(provider)
    reference = "Working through the problem step by step, the quantity asked for comes to 18960."
    status, body = _post(base + CLASSIFIER_PATH, {"model": "c", "messages": judge_messages(
        QUESTION, "9083 + 9877 = 18960\nAnswer: 18960", reference)})
    assert status == 200 and body["object"] == "chat.completion"
    reply = body["choices"][0]["message"]["content"]
    assert reply.splitlines()[-1] == "Yes" and "18960" in reply.splitlines()[0]
    items = [(QUESTION, "Answer: 18960", reference), (QUESTION, "Answer: 18950", reference),
             (QUESTION, "The sum is \\boxed{18960}.", "so the result is \\boxed{18960} after all 3 steps")]

    async def ask():
        client = ChatClient(DomainConfig(classifier="llm", model="c", base_url=base + "/v1/", max_retries=0))
        try:
            return await judge(items, client)
        finally:
            await client.aclose()
    assert asyncio.run(ask()) == [True, False, True]
    stats = provider.stats()
    assert stats["judge_answers"] == 4 and stats["judge_yes"] == 3 and stats["judge_no"] == 1
    assert stats["judge_calls"] == 4 and "classifier_answers" not in stats


def test_billed_is_keyed_as_the_driver_keys_the_pool_and_sent_without_holding_the_lock(url_of, monkeypatch):
    """A teacher sends the pool's question as it is; /billed counts it under question_key of that text (the key
    the rehearsal driver computes from the pool), and the table goes out after the provider's lock is released,
    so a slow reader holds up no other request."""
    import infra.rehearsal.provider as module
    from infra.rehearsal.provider import question_key
    provider = Provider(0.0, 0.0, 0.0)
    base = url_of(provider)
    raw = f"  {QUESTION}\n"
    status, _ = _post(base + TEACHER_PATH, {"model": "m", "messages": [{"role": "user", "content": raw}]})
    assert status == 200

    class Watching:
        @staticmethod
        def dumps(payload):
            assert not provider.lock.locked(), "sent while holding the provider's lock"
            return json.dumps(payload)
        loads = staticmethod(json.loads)
    monkeypatch.setattr(module, "json", Watching)
    with urllib.request.urlopen(base + "/billed", timeout=10) as r:
        billed = json.loads(r.read())
    assert billed == {question_key(raw): 1} and question_key(raw) == question_key(QUESTION)
