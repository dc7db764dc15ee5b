"""The API fuzzed from its own OpenAPI document (schemathesis): no request it can generate gets a 5xx, and every
4xx is OpenAI's error object.

The server is the FastAPI app under uvicorn on the tiny model, with a key; the document is fetched from
``/openapi.json`` with that key (without it, 401 like every route but ``/health``). Generation is bounded and
derandomized, so every run sends the same requests; each generated body is sent once more naming this
server's model, so the checks past the model lookup (and the engine) are fuzzed too. Run with ``-s`` to see
how many were sent and what they got.
"""
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from components.serving.service import S1Service
from tests.support.local_server import serving

KEY = "sk-fuzz-7e2a"
AUTH = {"Authorization": f"Bearer {KEY}"}
OUTCOMES: Counter = Counter()  # (method path, status) of every request sent


@pytest.fixture(scope="module")
def fuzz_url(tiny_engine):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("S1FLOW_FUZZ_KEY", KEY)
        service = S1Service("", engine_obj=tiny_engine, model_name="tiny", max_batch_size=8, batch_wait_timeout_s=0.01,
                            default_answer_tokens=4, unlimited_thinking_tokens=16, api_key_env="S1FLOW_FUZZ_KEY",
                            require_api_key=True, max_queued_requests=512)
        with serving(service) as url:
            yield url
    print(f"\nschemathesis: {sum(OUTCOMES.values())} requests: "
          + ", ".join(f"{op} -> {status}: {n}" for (op, status), n in sorted(OUTCOMES.items())))


def test_no_generated_request_gets_a_5xx_and_every_4xx_is_an_openai_error(fuzz_url):
    assert httpx.get(f"{fuzz_url}/openapi.json", timeout=30).status_code == 401  # the document needs the key too
    schema = schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/completions", "POST /v1/chat/completions", "GET /v1/models", "GET /health"}

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            sent = [case]
            if isinstance(case.body, dict) and "model" in case.body:  # and as this server's model: past the 404
                served = case.operation.Case(body={**case.body, "model": "tiny"}, media_type=case.media_type)
                sent.append(served)
            for one in sent:
                response = one.call(base_url=fuzz_url, headers=AUTH, timeout=60)
                OUTCOMES[(f"{one.method} {one.path}", response.status_code)] += 1
                assert response.status_code < 500, (one.as_curl_command(), response.text[:500])
                if response.status_code >= 400:
                    error = response.json()["error"]
                    assert set(error) >= {"message", "type", "param", "code"}, response.text
                    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)

        check()
    assert sum(OUTCOMES.values()) >= 4 * 10
