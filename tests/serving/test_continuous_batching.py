"""The server on the HF engine batches continuously: requests join the running batch and answer as they end."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from components.inference.hf_engine import HFEngine
from components.serving.service import S1Service
from tests.support.local_server import in_flight, serving, wait_in_flight

LONG = dict(max_thinking_tokens=60, min_thinking_tokens=60, max_tokens=4)  # thinks exactly 60 tokens
SHORT = dict(max_thinking_tokens=2, max_tokens=2)


class SlowEngine(HFEngine):
    """The tiny model, each forward pass taking at least ``pass_s`` (so a run lasts long enough to be joined);
    ``gate`` holds every engine run until it opens; ``passes`` counts forward passes; a prompt containing
    POISON makes the run it joins fail, and fails again alone. One ordinary token's score is raised far above the
    rest: the untrained model's near-ties (which a row's batch neighbours can break either way) never decide a
    token, so a row's tokens are the same in any batch, on any CPU."""

    def __init__(self, *a, pass_s: float = 0.02, **kw):
        super().__init__(*a, **kw)
        self.gate, self.passes = threading.Event(), 0
        self.gate.set()
        self.token = self.tokenizer("7", add_special_tokens=False)["input_ids"][0]

        def slow(module, args, kwargs):
            self.passes += 1
            time.sleep(pass_s)

        def decisive(module, args, kwargs, out):
            out.logits[..., self.token] += 100.0
        self.model.register_forward_pre_hook(slow, with_kwargs=True)
        self.model.register_forward_hook(decisive, with_kwargs=True)

    def _poisoned(self, prompts) -> bool:
        return any("POISON" in self.tokenizer.decode(list(p)) for p in prompts)

    def generate_rolling(self, jobs, more, sampling, max_rows=None):
        assert self.gate.wait(60)

        def guarded(room):
            got = more(room)
            if self._poisoned([j.prompt for j in got]):
                raise RuntimeError("engine blew up on this prompt")
            return got
        return super().generate_rolling(jobs, guarded, sampling, max_rows)

    def generate_forced(self, prompts, specs, sampling=None, **kw):
        if self._poisoned(prompts):
            raise RuntimeError("engine blew up on this prompt")
        return super().generate_forced(prompts, specs, sampling, **kw)


@pytest.fixture
def slow_server(tiny_model_dir):
    engine = SlowEngine.from_pretrained(str(tiny_model_dir), batch_size=8, unlimited_thinking_tokens=64)
    service = S1Service("", engine_obj=engine, model_name="tiny", max_batch_size=8, default_answer_tokens=4,
                        unlimited_thinking_tokens=64, api_key_env="S1FLOW_CONTINUOUS_TEST_NO_KEY")
    assert service.continuous
    with serving(service) as url:
        yield url, engine


def _chat(url, content, timeout=120, **kw):
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "temperature": 0, **kw}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def _events(url, content, **kw):
    """A streamed chat's events as they arrive (a generator: the caller reads at its pace)."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "temperature": 0, "stream": True,
            **kw}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line.removeprefix("data: "))


def _text(events) -> tuple[str, str]:
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    return ("".join(d.get("reasoning_content") or "" for d in deltas), "".join(d.get("content") or "" for d in deltas))


def test_a_short_request_is_answered_while_a_long_one_is_still_decoding(slow_server):
    url, engine = slow_server
    long_stream = _events(url, "What is 7 + 8?", **LONG)
    first = [next(long_stream) for _ in range(6)]  # the role chunk and five thinking tokens: it is decoding
    short = _chat(url, "What is 1 + 1?", **SHORT)
    assert short.status_code == 200, short.text
    answered_at = engine.passes
    rest = list(long_stream)
    thinking = _text(first + rest)[0]
    assert engine.passes - answered_at >= 20  # the long one still had most of its 60 tokens to go
    # and joining changed nothing in either answer: each is what it is when it runs alone
    alone = _chat(url, "What is 7 + 8?", **LONG).json()["choices"][0]["message"]
    assert (thinking, _text(first + rest)[1]) == (alone["reasoning_content"], alone["content"])
    assert short.json()["choices"][0]["message"] == _chat(url, "What is 1 + 1?", **SHORT).json()["choices"][0]["message"]


def test_a_failing_generation_fails_alone_and_its_run_s_other_rows_are_answered(slow_server):
    url, engine = slow_server
    references = {q: _chat(url, q, **LONG).json()["choices"][0]["message"] for q in ("What is 2 + 2?", "What is 3 + 5?")}
    streamed = _events(url, "What is 3 + 5?", **LONG)
    head = [next(streamed) for _ in range(4)]  # it has sent tokens when the run fails: they are not sent again
    with ThreadPoolExecutor(2) as pool:
        ok = pool.submit(_chat, url, "What is 2 + 2?", **LONG)
        time.sleep(0.2)
        bad = pool.submit(_chat, url, "POISON: what is 1 + 1?", **SHORT)
        stream_text = _text(head + list(streamed))
        assert bad.result().status_code == 500 and bad.result().json()["error"]["type"] == "server_error"
        assert ok.result().status_code == 200
    assert ok.result().json()["choices"][0]["message"] == references["What is 2 + 2?"]
    ref = references["What is 3 + 5?"]
    assert stream_text == (ref["reasoning_content"], ref["content"])
    wait_in_flight(url, 0)


def test_a_client_that_leaves_stops_its_row_and_holds_capacity_until_the_engine_stopped_it(slow_server):
    url, engine = slow_server
    engine.gate.clear()
    with ThreadPoolExecutor(4) as pool:
        dropped = [pool.submit(_chat, url, f"What is {i} + 4?", timeout=httpx.Timeout(30, read=0.5), **LONG)
                   for i in range(3)]
        for f in dropped:
            with pytest.raises(httpx.TimeoutException):
                f.result()
    time.sleep(0.3)
    assert in_flight(url) == 3  # every client is gone; the engine has not run: their capacity is held
    before = engine.passes
    engine.gate.set()
    wait_in_flight(url, 0)
    time.sleep(0.3)
    assert engine.passes - before <= 2, engine.passes - before  # a prefill and one step at most, not 60
    assert _chat(url, "What is 1 + 1?", **SHORT).status_code == 200


def test_another_sampling_setting_waits_for_the_run_and_is_not_overtaken(slow_server):
    """A sampled request behind a running greedy batch: greedy requests that arrive after it do not join the
    greedy run ahead of it (first come, first served); all three answer."""
    url, engine = slow_server
    done: dict[str, float] = {}

    def timed(name, content, **kw):
        r = _chat(url, content, **kw)
        done[name] = time.monotonic()
        return r

    with ThreadPoolExecutor(3) as pool:
        long = pool.submit(timed, "long", "What is 7 + 8?", **LONG)
        time.sleep(0.3)
        sampled = pool.submit(timed, "sampled", "What is 6 + 1?", **{**LONG, "temperature": 1.0, "seed": 3})
        time.sleep(0.3)
        later = pool.submit(timed, "later", "What is 9 + 1?", **SHORT)
        assert [f.result().status_code for f in (long, sampled, later)] == [200, 200, 200]
    assert done["long"] < done["later"] and done["sampled"] < done["later"]  # the short one did not jump the queue


def test_micro_batching_is_a_setting_and_an_unknown_mode_is_refused(tiny_engine):
    from components.config import ConfigError, parse_profile
    from components.serving.batching import ContinuousBatcher, MicroBatcher
    micro = S1Service("", engine_obj=tiny_engine, model_name="tiny", batching="micro",
                      api_key_env="S1FLOW_CONTINUOUS_TEST_NO_KEY")
    assert not micro.continuous and isinstance(micro.batcher, MicroBatcher)
    default = S1Service("", engine_obj=tiny_engine, model_name="tiny", api_key_env="S1FLOW_CONTINUOUS_TEST_NO_KEY")
    assert default.continuous and isinstance(default.batcher, ContinuousBatcher)
    with pytest.raises(ConfigError, match="serve.batching"):
        parse_profile({"serve": {"batching": "static"}}, "tiny")


def _parked_batcher():
    """A ContinuousBatcher whose engine loop never runs: its queue only fills (inside a running event loop)."""
    import asyncio

    from components.serving.batching import ContinuousBatcher
    b = ContinuousBatcher(engine=None, lock=threading.Lock(), max_size=8, wait_s=10.0, max_queued=4)
    b.task, b.wake = asyncio.get_running_loop().create_future(), asyncio.Event()
    return b


def test_a_queued_generation_whose_caller_left_gives_its_capacity_back_at_once():
    import asyncio

    from components.inference.budget_forcing import BudgetSpec
    from components.inference.engine import Sampling

    async def go():
        b, released = _parked_batcher(), []
        futures = [b.submit([1], BudgetSpec(max_thinking_tokens=1), Sampling(), lambda i=i: released.append(i))
                   for i in range(3)]
        futures[1].cancel()  # behind the head: the engine would only reach it later
        await asyncio.sleep(0.05)
        assert released == [1] and len(b.pending) == 2
    asyncio.run(go())


def test_a_caller_waiting_for_the_engine_is_served_in_turn_with_the_queue():
    """Generations queued before an exclusive caller still join the running batch; those after it wait for it."""
    import asyncio

    from components.inference.budget_forcing import BudgetSpec
    from components.inference.engine import Sampling

    async def go():
        b = _parked_batcher()
        spec, s = BudgetSpec(max_thinking_tokens=1), Sampling()
        before = [b.submit([1], spec, s, lambda: None) for _ in range(2)]
        b.waiting.append(time.monotonic())
        after = b.submit([2], spec, s, lambda: None)
        key = next(iter(b.pending)).key
        assert [g.future for g in b._take(8, key)] == before  # they came first: they join
        assert b._take(8, key) == [] and b._take(8, None) == []  # it came after the exclusive caller: it waits
        b.waiting.clear()
        assert [g.future for g in b._take(8, None)] == [after]
    asyncio.run(go())


def test_a_stream_whose_retry_would_send_other_tokens_fails_rather_than_splice():
    """A stream retried after its run failed: tokens it already sent are not sent again, and where the retry
    regenerates a different token than was sent, the stream fails instead of continuing another text."""
    import asyncio

    from components.inference.budget_forcing import BudgetSpec, ForcedResult
    from components.inference.engine import Sampling
    from components.serving.batching import ContinuousBatcher

    class Replays:
        def __init__(self, tokens):
            self.tokens = tokens

        def generate_forced(self, prompts, specs, sampling, on_token=None, **kw):
            for t in self.tokens:
                on_token(0, t, Phase.THINKING)
            return [ForcedResult(thinking="", answer="", thinking_tokens=len(self.tokens), answer_tokens=0,
                                 waits_used=0, hit_budget=False, token_ids=list(self.tokens))]

    async def go(retry_tokens):
        b = ContinuousBatcher(Replays(retry_tokens), threading.Lock(), max_size=4, wait_s=0.0)
        b.task, b.wake = asyncio.get_running_loop().create_future(), asyncio.Event()
        streamed = []
        fut = b.submit([1], BudgetSpec(max_thinking_tokens=4), Sampling(), lambda: None,
                       on_token=lambda row, token, phase: streamed.append(token))
        gen = b.pending.popleft()
        for t in (11, 12):  # the failed run had sent two tokens
            gen.on_token(t, Phase.THINKING)
        await asyncio.get_running_loop().run_in_executor(None, b._alone, gen)
        try:
            return streamed, (await fut).token_ids
        except RuntimeError as e:
            return streamed, str(e)

    from components.inference.budget_forcing import Phase
    assert asyncio.run(go([11, 12, 13, 14])) == ([11, 12, 13, 14], [11, 12, 13, 14])  # 13, 14 sent once each
    streamed, error = asyncio.run(go([11, 99, 13, 14]))
    assert streamed == [11, 12] and "did not reproduce the tokens already sent" in error
