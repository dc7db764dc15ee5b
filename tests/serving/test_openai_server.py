"""Ray Serve on 127.0.0.1 with the tiny model, driven by the official openai client."""
import httpx
import openai
import pytest

from tests.serving.conftest import KEY


def test_health_and_models(server, client):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_completion_with_budget(client):
    r = client.completions.create(model="tiny", prompt="What is 12 + 30?", max_tokens=6, temperature=0,
                                  extra_body={"max_thinking_tokens": 10, "final_answer_prefix": "Answer:"})
    choice = r.choices[0]
    assert choice.model_extra["reasoning_content"] is not None
    reasoning = r.usage.completion_tokens_details.reasoning_tokens
    assert 0 < reasoning <= 10 and choice.model_extra["s1"]["thinking_tokens"] == reasoning
    if choice.model_extra["s1"]["hit_budget"]:
        assert choice.text.startswith("Answer:")
    assert r.usage.completion_tokens >= reasoning


def test_chat_with_waits_and_reasoning_content(client):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is 4831 + 2967?"}], max_tokens=6,
        extra_body={"max_thinking_tokens": 30, "num_waits": 2, "wait_strings": ["Wait", "Hmm"],
                    "logit_bias_unused": 1})
    msg = r.choices[0].message
    assert isinstance(msg.model_extra["reasoning_content"], str)
    assert r.usage.completion_tokens_details.reasoning_tokens <= 30
    assert r.choices[0].finish_reason in ("stop", "length")


def test_streaming_matches_non_streaming(client):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "What is 7 + 8?"}], max_tokens=6, temperature=0,
              extra_body={"max_thinking_tokens": 16})
    full = client.chat.completions.create(**kw)
    reasoning, content, finish = "", "", None
    for chunk in client.chat.completions.create(stream=True, **kw):
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert reasoning == full.choices[0].message.model_extra["reasoning_content"]
    assert content == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason


def test_concurrent_requests_share_batches(server, client):
    from concurrent.futures import ThreadPoolExecutor
    def one(i):
        return client.completions.create(model="tiny", prompt=f"What is {i} + {i}?", max_tokens=4,
                                         extra_body={"max_thinking_tokens": 8}).usage.completion_tokens_details
    before = httpx.get(f"{server}/health").json()
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(16)))
    after = httpx.get(f"{server}/health").json()
    assert all(o.reasoning_tokens <= 8 for o in outs)
    batches = after["batches"] - before["batches"]
    items = after["mean_batch_size"] * after["batches"] - before["mean_batch_size"] * before["batches"]
    assert 0 < batches < 16 and items / batches > 1, (before, after)  # requests really shared forward passes


def test_key_reaches_replicas_and_guards_every_route(server):
    for path in ("/v1/models", "/docs", "/openapi.json"):
        assert httpx.get(f"{server}{path}", timeout=30).status_code == 401
        assert httpx.get(f"{server}{path}", timeout=30, headers={"Authorization": "Bearer ключ".encode()}
                         ).status_code == 401
    assert httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).status_code == 200
    assert httpx.get(f"{server}/health", timeout=30).status_code == 200


@pytest.mark.parametrize("body,status,param", [
    ({"model": "nope", "prompt": "x"}, 404, "model"),
    ({"model": "tiny", "prompt": "x", "max_thinking_tokens": -1}, 400, "max_thinking_tokens"),
    ({"model": "tiny", "prompt": "x", "max_thinking_tokens": 4, "min_thinking_tokens": 9}, 400, None),
    ({"model": "tiny", "prompt": "x " * 2000}, 400, "prompt"),
    ({"model": "tiny"}, 400, "prompt"),
])
def test_bad_requests_get_openai_errors(server, client, body, status, param):
    r = httpx.post(f"{server}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param
    ok = client.completions.create(model="tiny", prompt="What is 1 + 1?", extra_body={"max_thinking_tokens": 4})
    assert ok.choices  # still serving


def test_malformed_json_and_auth(server):
    r = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{server}/v1/chat/completions", timeout=30,
                   json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list() if False else bad.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}])


def test_a_method_per_request_through_ray_serve(client):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is 3 + 4?"}], max_tokens=4,
        extra_body={"budget": "auto", "max_thinking_tokens": 16, "probe_every": 4, "agree": 2, "answer_tokens": 3})
    s1 = r.choices[0].model_extra["s1"]
    assert s1["method"] == "early_exit" and s1["budget"] == "auto" and s1["probes"], s1
    assert r.usage.completion_tokens_details.reasoning_tokens == s1["thinking_tokens"] + s1["probe_tokens"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"method": "scheduled_waits", "alpha": -1})
    assert e.value.body["param"] == "alpha"
