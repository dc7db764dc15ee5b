"""The server's request handling on the tiny HF engine, served by uvicorn (no Ray; fast).

Per-request isolation (the poison case), parse-time validation, the OpenAI
surface (n, stop, content parts, reasoning fields, max_completion_tokens,
include_usage, unsupported fields), auth on every route, back-pressure.
"""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest

from components.config import ServeConfig
from components.serving.launch import check_auth, is_loopback
from components.serving.service import S1Service
from tests.support.local_server import WrappedEngine, in_flight, serving, wait_in_flight

KEY = "svc-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


class PoisonEngine(WrappedEngine):
    """The tiny engine, except that a prompt containing POISON fails inside generate_forced."""

    def generate_forced(self, prompts, specs, sampling, **kw):
        if any("POISON" in (p if isinstance(p, str) else self.tokenizer.decode(p)) for p in prompts):
            raise RuntimeError("engine blew up on this prompt")
        return self.inner.generate_forced(prompts, specs, sampling, **kw)


@pytest.fixture(scope="module")
def make_server(tiny_engine, monkeypatch_module):
    monkeypatch_module.setenv("S1FLOW_SVC_KEY", KEY)
    with ExitStack() as servers:

        def make(**kw):
            args = dict(model_name="tiny", max_batch_size=8, batch_wait_timeout_s=0.2, default_answer_tokens=8,
                        unlimited_thinking_tokens=64, api_key_env="S1FLOW_SVC_KEY")
            args = {"engine_obj": PoisonEngine(tiny_engine), **args, **kw}
            return servers.enter_context(serving(S1Service("", **args)))

        make.tiny = tiny_engine
        yield make


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def url(make_server):
    return make_server()


def chat(url, content="What is 2 + 2?", timeout=120, **kw):
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 6,
            "max_thinking_tokens": 12, **kw}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=timeout)


@pytest.mark.parametrize("bad,status", [({"min_thinking_tokens": 5000}, 400), ({"content": "POISON 1 + 1"}, 500)])
def test_one_bad_request_does_not_fail_its_batch(url, bad, status):
    def one(i):
        kw = dict(bad) if i == 7 else {"content": f"What is {i} + {i}?"}
        if i == 7 and "min_thinking_tokens" in kw:
            kw["max_thinking_tokens"] = None
        return chat(url, **kw)

    with ThreadPoolExecutor(16) as pool:
        rs = list(pool.map(one, range(16)))
    codes = [r.status_code for r in rs]
    assert codes[7] == status and codes[:7] + codes[8:] == [200] * 15, codes
    assert rs[7].json()["error"]["message"]
    assert all(r.json()["choices"][0]["message"]["content"] is not None for i, r in enumerate(rs) if i != 7)
    health = httpx.get(f"{url}/health").json()
    assert health["mean_batch_size"] > 1, health  # concurrent requests really shared forward passes


@pytest.mark.parametrize("body,param", [
    ({"min_thinking_tokens": 5000, "max_thinking_tokens": None}, "min_thinking_tokens"),
    ({"max_thinking_tokens": 65}, "max_thinking_tokens"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"seed": 2**31 - 1, "n": 2}, "seed"),
    ({"n": 17}, "n"),
    ({"n": 0}, "n"),
    ({"wait_strings": ["Wait"] * 17}, "wait_strings"),
    ({"wait_strings": ["Wait " * 300]}, "wait_strings"),
    ({"wait_strings": ["Wait " * 100]}, "wait_strings"),  # under the character limit, over the token limit
    ({"final_answer_prefix": "Answer " * 2000}, "final_answer_prefix"),
    ({"final_answer_prefix": "Answer: " * 100}, "final_answer_prefix"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stream": True, "n": 2}, "stream"),
    ({"messages": [{"role": "user", "content": "hi"}] * 257}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
])
def test_parse_time_validation_names_the_field(url, body, param):
    body = dict(body)
    content = body.pop("content", "What is 1 + 1?")
    r = chat(url, content, **body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] and err["param"].startswith(param), err
    assert param in err["message"], err


def test_context_check_counts_the_forced_answer_prefix(tiny_engine):
    from components.serving.protocol import APIError, ChatRequest
    svc = S1Service("", engine_obj=tiny_engine, unlimited_thinking_tokens=64, default_answer_tokens=8)

    def req(reps, prefix=""):
        return ChatRequest.model_validate({"model": "s1flow", "max_thinking_tokens": 60, "final_answer_prefix": prefix,
                                           "messages": [{"role": "user", "content": "What is 1 + 1? " * reps}]})
    longest = 0
    for reps in range(1, 200):  # the longest prompt that fits without a prefix
        try:
            svc.chat_setup(req(reps))
            longest = reps
        except APIError as e:
            assert e.param == "messages" and e.code == "context_length_exceeded"
            break
    assert 0 < longest < 199
    with pytest.raises(APIError, match="answer prefix") as e:
        svc.chat_setup(req(longest, "Answer: " * 30))
    assert e.value.code == "context_length_exceeded"


@pytest.mark.parametrize("body,param", [
    ({"prompt": ["What is 1 + 1?"] * 65}, "prompt"),
    ({"prompt": ["What is 1 + 1?"] * 20, "n": 4}, None),
    ({"prompt": []}, "prompt"),
])
def test_completion_prompt_lists_are_bounded(url, body, param):
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", **body}, headers=AUTH, timeout=60)
    assert r.status_code == 400, r.text
    assert "prompt" in r.json()["error"]["message"]


def test_n_samples_use_distinct_seeds(url):
    kw = dict(temperature=1.0, seed=11, max_thinking_tokens=10)
    many = chat(url, n=3, **kw).json()
    assert [c["index"] for c in many["choices"]] == [0, 1, 2]
    singles = [chat(url, **{**kw, "seed": 11 + i}).json()["choices"][0]["message"] for i in range(3)]
    assert [c["message"]["reasoning_content"] for c in many["choices"]] == [s["reasoning_content"] for s in singles]
    assert many["usage"]["completion_tokens_details"]["reasoning_tokens"] == sum(
        c["s1"]["thinking_tokens"] for c in many["choices"])
    r = httpx.post(f"{url}/v1/completions", headers=AUTH, timeout=60,
                   json={"model": "tiny", "prompt": ["What is 1 + 1?", "What is 2 + 2?"], "n": 2,
                         "max_thinking_tokens": 6, "max_tokens": 3}).json()
    assert len(r["choices"]) == 4


def _thinking_of_concurrent(url, n, **kw) -> tuple[list[str], int]:
    """The reasoning of ``n`` requests sent at once, and how many batches the server ran for them."""
    before = httpx.get(f"{url}/health", timeout=30).json()["batches"]
    with ThreadPoolExecutor(n) as pool:
        out = list(pool.map(lambda _: chat(url, **kw).json()["choices"][0]["message"]["reasoning_content"], range(n)))
    return out, httpx.get(f"{url}/health", timeout=30).json()["batches"] - before


def test_concurrent_requests_with_one_seed_sample_alike(url):
    """Batched together (one generate call), each request still draws with its own seed, not seed + position."""
    kw = dict(temperature=1.0, seed=5, max_thinking_tokens=12)
    alone = chat(url, **kw).json()["choices"][0]["message"]["reasoning_content"]
    together, batches = _thinking_of_concurrent(url, 4, **kw)
    assert together == [alone] * 4 and batches < 4  # some shared a batch
    assert chat(url, **{**kw, "seed": 6}).json()["choices"][0]["message"]["reasoning_content"] != alone


def test_concurrent_unseeded_requests_do_not_sample_alike(url):
    together, batches = _thinking_of_concurrent(url, 4, temperature=1.0, max_thinking_tokens=12)
    assert len(set(together)) > 1 and batches < 4


def test_stop_strings_cut_the_answer(url):
    kw = dict(max_thinking_tokens=4, final_answer_prefix="Answer: 42", max_tokens=8)
    plain = chat(url, **kw).json()["choices"][0]
    assert plain["message"]["content"].startswith("Answer: 42")
    r = chat(url, stop=[" 4", "zzz"], **kw).json()["choices"][0]
    assert r["message"]["content"] == "Answer:" and r["finish_reason"] == "stop"
    content, finish = _stream(url, stop=" 4", **kw)[2:]
    assert content == "Answer:" and finish == "stop"


def test_content_parts_and_both_reasoning_fields(url):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "5 + 6?"}]
    a = chat(url, parts).json()["choices"][0]["message"]
    b = chat(url, "What is 5 + 6?").json()["choices"][0]["message"]
    assert a == b
    assert a["reasoning"] == a["reasoning_content"] and a["reasoning"]


def test_max_completion_tokens_caps_the_answer(url):
    r = chat(url, max_tokens=None, max_completion_tokens=2, max_thinking_tokens=5).json()
    u = r["usage"]
    assert u["completion_tokens"] - u["completion_tokens_details"]["reasoning_tokens"] <= 2


def _stream(url, **kw):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 7 + 8?"}], "max_tokens": 6,
            "max_thinking_tokens": 12, "stream": True, **kw}
    events = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"])
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finish = next(c["choices"][0]["finish_reason"] for c in reversed(chunks) if c["choices"])
    return chunks, reasoning, content, finish


def test_streaming_matches_and_include_usage(url):
    full = chat(url, "What is 7 + 8?", temperature=0).json()
    chunks, reasoning, content, finish = _stream(url, stream_options={"include_usage": True})
    msg = full["choices"][0]["message"]
    assert (reasoning, content, finish) == (msg["reasoning_content"], msg["content"], full["choices"][0]["finish_reason"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]
    chunks = _stream(url)[0]
    assert chunks[-1]["choices"]  # without include_usage no usage-only chunk


@pytest.mark.parametrize("method,path", [("GET", "/v1/models"), ("POST", "/v1/completions"),
                                         ("POST", "/v1/chat/completions"), ("GET", "/docs"),
                                         ("GET", "/openapi.json"), ("GET", "/redoc"), ("GET", "/anything")])
def test_every_route_but_health_needs_the_key(url, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer ключ".encode()},
                    {"Authorization": b"\xff\xfe"}, {"Authorization": KEY}):
        r = httpx.request(method, f"{url}{path}", headers=headers, json={}, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", (headers, r.text)
    assert httpx.get(f"{url}/health").status_code == 200
    if path in ("/docs", "/redoc"):
        assert httpx.get(f"{url}{path}", headers=AUTH).status_code == 404  # turned off, not merely guarded
    if path == "/openapi.json":
        assert httpx.get(f"{url}{path}", headers=AUTH).status_code == 200  # the schema, behind the key


def test_auth_fails_closed(monkeypatch, tiny_engine):
    monkeypatch.delenv("S1FLOW_NOPE", raising=False)
    with pytest.raises(RuntimeError, match="S1FLOW_NOPE"):
        S1Service("", engine_obj=tiny_engine, api_key_env="S1FLOW_NOPE", require_api_key=True)
    with pytest.raises(ValueError, match="S1FLOW_NOPE"):
        check_auth(ServeConfig(host="0.0.0.0", api_key_env="S1FLOW_NOPE"))
    check_auth(ServeConfig(host="127.0.0.1", api_key_env="S1FLOW_NOPE"))  # loopback may run without a key
    monkeypatch.setenv("S1FLOW_NOPE", "k")
    check_auth(ServeConfig(host="0.0.0.0", api_key_env="S1FLOW_NOPE"))
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_saturation_answers_429_and_large_bodies_413(make_server):
    url = make_server(max_queued_requests=2, max_request_bytes=4000)
    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda i: chat(url, f"What is {i} + 1?", max_thinking_tokens=40), range(8)))
    codes = sorted(r.status_code for r in rs)
    assert set(codes) == {200, 429} and codes.count(200) >= 2, codes
    busy = next(r for r in rs if r.status_code == 429)
    assert busy.headers["Retry-After"] == "1" and busy.json()["error"]["type"] == "rate_limit_error"
    assert chat(url).status_code == 200  # recovers once the burst is over
    r = chat(url, "x" * 5000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_a_request_without_a_budget_gets_an_answer_when_the_cap_is_the_context(make_server, tiny_engine, tmp_path):
    """s1-32b's setting (unlimited_thinking_tokens == the context length): an unbudgeted request is capped to what
    its prompt and answer leave of the context, thinks, and is answered; the evaluation's no-budget run too."""
    from components.config import EvaluateConfig, ServeConfig
    from components.evaluation.served import evaluate_via_serve
    from components.records import Question

    context = 160  # the tiny model's 1024 positions, shortened so that thinking to the cap takes a second

    engine = WrappedEngine(tiny_engine)
    engine.context_length = context
    url = make_server(unlimited_thinking_tokens=context, engine_obj=engine)
    r = chat(url, max_thinking_tokens=None, max_tokens=4)
    assert r.status_code == 200, r.text
    body = r.json()
    usage, meta = body["usage"], body["choices"][0]["s1"]
    assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] <= context - usage["prompt_tokens"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= context
    assert meta["hit_budget"] and usage["completion_tokens"] > usage["completion_tokens_details"]["reasoning_tokens"]

    ev = EvaluateConfig(budgets=[8], max_answer_tokens=4, concurrency=2)
    report, records = evaluate_via_serve(
        ev, ServeConfig(model_name="tiny", api_key_env="S1FLOW_SVC_KEY"), url,
        [Question(id="q", source="t", question="What is 2 + 2?", answer="4")], tmp_path / "s.jsonl", "h",
        thinking_cap=context)
    assert report["failed_requests"] == 0 and report["unlimited"] is not None
    assert {r["budget"] for r in records} == {8, None}
    with pytest.raises(ValueError, match=r"evaluate.budgets: \[2048\] exceed engine.unlimited_thinking_tokens"):
        evaluate_via_serve(EvaluateConfig(budgets=[8, 2048]), ServeConfig(), url, [], tmp_path / "x.jsonl", "h",
                           thinking_cap=context)


class GatedEngine(WrappedEngine):
    """The tiny engine behind a gate: each engine call waits until ``gate`` opens; counts the tokens it made."""

    def __init__(self, inner):
        super().__init__(inner)
        self.gate, self.tokens = threading.Event(), 0

    def generate_forced(self, prompts, specs, sampling, **kw):
        assert self.gate.wait(60)
        res = self.inner.generate_forced(prompts, specs, sampling, **kw)
        self.tokens += sum(len(r.token_ids) for r in res)
        return res


def test_dropped_clients_cancel_their_work_and_hold_capacity_until_the_engine_stopped(make_server):
    engine = GatedEngine(make_server.tiny)
    url = make_server(engine_obj=engine, unlimited_thinking_tokens=400)
    long = dict(max_thinking_tokens=400, min_thinking_tokens=400)

    def dropped_stream(i):
        body = {"model": "tiny", "messages": [{"role": "user", "content": f"What is {i} + 1?"}], "stream": True, **long}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first event, then the client goes away

    def dropped_request(i):
        with pytest.raises(httpx.TimeoutException):
            chat(url, f"What is {i} + 2?", **long, timeout=httpx.Timeout(30, read=0.5))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: dropped_stream(i) if i < 10 else dropped_request(i), range(16)))
    time.sleep(0.5)
    assert in_flight(url) == 16  # every client is gone, the engine has stopped none: their capacity is held
    engine.gate.set()
    wait_in_flight(url, 0)
    assert engine.tokens <= 16, engine.tokens  # each stopped at its first token at most, not 400
    t = time.monotonic()
    assert chat(url).status_code == 200 and time.monotonic() - t < 5  # no abandoned work ahead of it


def test_admission_counts_generations_not_requests(make_server):
    engine = GatedEngine(make_server.tiny)
    url = make_server(engine_obj=engine, max_queued_requests=8)
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(httpx.post, f"{url}/v1/completions", headers=AUTH, timeout=60,
                          json={"model": "tiny", "prompt": ["What is 1 + 1?"] * 4, "n": 2, "max_thinking_tokens": 4,
                                "max_tokens": 2, "temperature": 1.0})
        wait_in_flight(url, 8, within_s=10)  # one request, eight generations
        busy = chat(url)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "overloaded", busy.text
        engine.gate.set()
        assert big.result().status_code == 200 and len(big.result().json()["choices"]) == 8
    r = httpx.post(f"{url}/v1/completions", headers=AUTH, timeout=60,
                   json={"model": "tiny", "prompt": ["What is 1 + 1?"] * 3, "n": 3, "max_thinking_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"  # 9 > 8: never admissible, not a 429
    wait_in_flight(url, 0)


def test_the_batcher_queue_is_bounded():
    import asyncio

    from components.inference.budget_forcing import BudgetSpec
    from components.inference.engine import Sampling
    from components.serving.batching import MicroBatcher
    from components.serving.protocol import APIError

    async def go():
        released = []
        b = MicroBatcher(lambda *a, **k: [], max_size=1, wait_s=10, max_queued=2)
        b.task = asyncio.get_running_loop().create_future()  # no consumer: the queue only fills
        b.queue = asyncio.Queue(maxsize=2)
        for _ in range(2):
            b.submit([1], BudgetSpec(max_thinking_tokens=1), Sampling(), lambda: released.append(1))
        with pytest.raises(APIError) as e:
            b.submit([1], BudgetSpec(max_thinking_tokens=1), Sampling(), lambda: released.append(1))
        assert e.value.status == 429 and released == []  # the caller gives back the capacity it took
    asyncio.run(go())


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(tiny_engine):
    """No Content-Length: the body is counted as it arrives (raw ASGI, so the bytes the app read are exact)."""
    import asyncio

    from components.serving.service import build_api
    app = build_api(S1Service("", engine_obj=tiny_engine, model_name="tiny", max_request_bytes=4000,
                              api_key_env="S1FLOW_CHUNKED_TEST_NO_KEY"))
    chunk, total, read, sent = b"x" * 65536, 16 << 20, [0], []

    async def receive():
        read[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": read[0] < total}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"
    assert read[0] <= 2 * len(chunk), read[0]  # not the 16 MiB


@pytest.mark.parametrize("method,path,status", [("GET", "/v1/chat/completions", 405), ("POST", "/v1/models", 405),
                                                ("POST", "/v1/nothing", 404), ("GET", "/", 404),
                                                ("PUT", "/health", 405)])
def test_framework_errors_are_openai_error_objects(url, method, path, status):
    r = httpx.request(method, f"{url}{path}", headers=AUTH, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw,param", [
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages.0.content"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}', "stop.0"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": "2"}', "n"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
])
def test_lone_surrogates_and_loose_types_are_400s(url, raw, param):
    r = httpx.post(f"{url}/v1/chat/completions", content=raw, timeout=30,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err


def test_a_client_gone_before_its_work_ends_gets_a_499_and_the_work_is_cancelled():
    """The client's disconnect wins the race: the handler answers 499 (nobody reads it) instead of reading the
    result of work whose cancellation has only been requested."""
    import asyncio

    from components.serving.protocol import APIError
    from components.serving.service import _unless_gone

    class Gone:
        async def receive(self):
            return {"type": "http.disconnect"}

    async def go():
        stopped = asyncio.Event()

        async def work():
            try:
                await asyncio.sleep(30)
            finally:
                stopped.set()
        with pytest.raises(APIError) as e:
            await _unless_gone(Gone(), work())
        await asyncio.wait_for(stopped.wait(), 5)  # the engine call is cancelled, not left running
        return e.value.status
    assert asyncio.run(go()) == 499
