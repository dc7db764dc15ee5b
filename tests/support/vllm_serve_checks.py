"""The server on vLLM's async engine (run in the vLLM venv; no Ray there): uvicorn + the real AsyncLLM.

``python -m tests.support.vllm_serve_checks --model DIR`` prints ``SERVE_CHECKS {json}``
with a verdict per check (used by tests/serving/test_vllm_serve.py).
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import httpx

KEY = "vllm-serve-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def chat(url, content="What is 2 + 2?", **kw):
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 6,
            "max_thinking_tokens": 16, **kw}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=300)


def stream(url, **kw):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 7 + 8?"}], "max_tokens": 6,
            "max_thinking_tokens": 16, "stream": True, **kw}
    reasoning, content, finish = "", "", None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            c = json.loads(line[6:])
            if c["choices"]:
                d = c["choices"][0]["delta"]
                reasoning += d.get("reasoning_content") or ""
                content += d.get("content") or ""
                finish = c["choices"][0]["finish_reason"] or finish
    return reasoning, content, finish


def check_streaming_matches_non_streaming(url, service):
    full = chat(url, "What is 7 + 8?").json()["choices"][0]
    got = stream(url)
    assert got == (full["message"]["reasoning_content"], full["message"]["content"], full["finish_reason"]), (got, full)
    assert full["message"]["reasoning_content"], full


def check_one_bad_request_does_not_fail_its_neighbours(url, service):
    def one(i):
        return chat(url, min_thinking_tokens=5000, max_thinking_tokens=None) if i == 7 else chat(url, f"What is {i}?")
    with ThreadPoolExecutor(16) as pool:
        codes = [r.status_code for r in pool.map(one, range(16))]
    assert codes[7] == 400 and codes[:7] + codes[8:] == [200] * 15, codes


def check_context_length_is_checked_on_vllm(url, service):
    assert service.max_len == 1024, service.max_len
    r = chat(url, "What is 1 + 1? " * 200)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text


def check_n_and_stop(url, service):
    kw = dict(temperature=1.0, max_thinking_tokens=10)
    many = chat(url, n=2, seed=3, **kw).json()["choices"]
    singles = [chat(url, seed=3 + i, **kw).json()["choices"][0] for i in range(2)]
    assert [c["message"] for c in many] == [c["message"] for c in singles], (many, singles)  # sample i: seed + i
    r = chat(url, max_thinking_tokens=4, final_answer_prefix="Answer: 42", stop=" 4").json()["choices"][0]
    assert r["s1"]["hit_budget"] and r["message"]["content"] == "Answer:" and r["finish_reason"] == "stop", r


def check_client_disconnect_aborts_the_request(url, service):
    aborted = []
    backend = service.engine.backend
    real = backend.abort

    async def spy(request_id, *a, **kw):
        aborted.append(request_id)
        return await real(request_id, *a, **kw)

    backend.abort = spy
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Think long."}], "stream": True,
                "max_thinking_tokens": 900, "min_thinking_tokens": 900, "max_tokens": 8}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=300) as r:
            lines = r.iter_lines()
            for _ in range(4):
                next(lines)
        deadline = time.time() + 20
        while not aborted and time.time() < deadline:
            time.sleep(0.1)
        assert aborted, "the engine was not told to abort"
        while backend.get_num_unfinished_requests() and time.time() < deadline:
            time.sleep(0.1)
        assert backend.get_num_unfinished_requests() == 0
    finally:
        backend.abort = real


def check_a_dropped_request_is_aborted_and_its_capacity_comes_back(url, service):
    """A non-streaming request whose client leaves is aborted in vLLM; ``in_flight`` is back to 0 only after."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Think long."}], "n": 2,
            "max_thinking_tokens": 900, "min_thinking_tokens": 900, "max_tokens": 8}
    try:
        httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=httpx.Timeout(30, read=1.0))
    except httpx.TimeoutException:
        pass
    backend, deadline = service.engine.backend, time.time() + 20
    while (backend.get_num_unfinished_requests() or service.inflight) and time.time() < deadline:
        time.sleep(0.1)
    assert backend.get_num_unfinished_requests() == 0 and service.inflight == 0, service.inflight


def check_methods_per_request_on_vllm(url, service):
    """A probing controller runs by chunks on the async engine: greedy, its thinking is budget forcing's up to
    where it exited, its probes are counted in usage; every served sequential method answers."""
    kw = dict(max_thinking_tokens=24, final_answer_prefix="Answer:")
    forced = chat(url, "What is 7 + 8?", **kw).json()["choices"][0]
    r = chat(url, "What is 7 + 8?", budget="auto", probe_every=4, agree=2, answer_tokens=3, **kw).json()
    s1 = r["choices"][0]["s1"]
    assert s1["method"] == "early_exit" and s1["probes"], r
    assert forced["message"]["reasoning_content"].startswith(r["choices"][0]["message"]["reasoning_content"]), r
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] == s1["thinking_tokens"] + s1["probe_tokens"]
    for extra in ({"method": "confidence_exit", "threshold": 0.0, "transitions": ["\n"]},
                  {"method": "scheduled_waits", "alpha": 0.5}):
        got = chat(url, **kw, **extra)
        assert got.status_code == 200 and got.json()["choices"][0]["s1"]["method"] == extra["method"], got.text
    assert service.inflight == 0, service.inflight


CHECKS = {n: f for n, f in sorted(globals().items()) if n.startswith("check_")}


def main() -> None:
    import uvicorn

    from components.common.network import free_port
    from components.serving.service import S1Service, build_api
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    os.environ["S1FLOW_VLLM_SERVE_KEY"] = KEY
    verdicts = {}
    holder = {}
    port = free_port()

    def run():  # the engine is built inside uvicorn's loop (AsyncLLM binds to the loop that creates it)
        import asyncio

        async def serve():
            holder["service"] = service = S1Service(
                args.model, model_name="tiny", engine="vllm", max_batch_size=16, default_answer_tokens=8,
                unlimited_thinking_tokens=900, api_key_env="S1FLOW_VLLM_SERVE_KEY")
            server = uvicorn.Server(uvicorn.Config(build_api(service), host="127.0.0.1", port=port,
                                                   log_level="warning"))
            holder["server"] = server
            await server.serve()
        asyncio.run(serve())

    threading.Thread(target=run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    for name, fn in CHECKS.items():
        try:
            fn(url, holder["service"])
            verdicts[name] = "ok"
        except Exception:
            verdicts[name] = traceback.format_exc()[-1500:]
    print("SERVE_CHECKS " + json.dumps(verdicts), flush=True)
    holder["service"].engine.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
