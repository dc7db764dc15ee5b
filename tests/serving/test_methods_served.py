"""Every served test-time method per request (``method`` and its settings in the body, ``budget: "auto"``),
driven by the official openai client (``extra_body``) against uvicorn on the tiny HF engine.

Each served method answers what its method object answers offline on the same engine (greedy: the same thinking,
answer and probe tokens); a vote picks what the method's own ``combine`` picks from the same samples; bad settings
are 400s naming the field; ``budget: auto`` reports its probes and counts them in usage.
"""
import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from components.common.grading import extract_answer
from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec
from components.inference.engine import Sampling, row_seeds
from components.inference.methods.base import Forcing
from components.inference.methods.registry import build
from components.serving.methods import SERVED, Cancelled, ServedEngine, settings_owners
from components.serving.protocol import ChatRequest, CompletionRequest
from components.serving.service import S1Service
from tests.support.local_server import WrappedEngine, serving

QUESTION = "What is 12 + 30?"
BUDGET, ANSWER = 24, 6
SETTINGS = {
    "budget_forcing": {},
    "scheduled_waits": {"alpha": 0.5, "max_waits": 2},
    "early_exit": {"probe_every": 4, "agree": 2, "answer_tokens": 4},
    "confidence_exit": {"threshold": 0.0, "transitions": ["\n"], "answer_tokens": 4},
}


class Engine(WrappedEngine):
    """The tiny engine with its own probed decoding and plain generation (seeds passed through)."""

    def generate(self, prompts, sampling, seeds=None):
        return self.inner.generate(prompts, sampling, seeds=seeds)

    def generate_probed(self, *a, **kw):
        return self.inner.generate_probed(*a, **kw)


@pytest.fixture(scope="module")
def url(tiny_engine):
    service = S1Service("", engine_obj=Engine(tiny_engine), model_name="tiny", max_batch_size=8,
                        batch_wait_timeout_s=0.05, default_answer_tokens=8, unlimited_thinking_tokens=64,
                        api_key_env="S1FLOW_METHODS_TEST_NO_KEY")
    with serving(service) as base:
        yield base
    service.close()


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def offline(engine, name, settings, budget=BUDGET):
    forcing = Forcing(final_answer_prefix="Answer:", max_answer_tokens=ANSWER)
    return build(name, forcing, settings, [budget]).run(engine, [QUESTION], budget)[0]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_served_sequential_method_answers_as_its_offline_run(client, tiny_engine, name):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=ANSWER, temperature=0,
        extra_body={"method": name, "max_thinking_tokens": BUDGET, "final_answer_prefix": "Answer:",
                    **SETTINGS[name]})
    choice, want = r.choices[0], offline(tiny_engine, name, SETTINGS[name])
    s1 = choice.model_extra["s1"]
    assert choice.message.model_extra["reasoning_content"] == want.thinking
    assert choice.message.content == want.answer
    assert s1["thinking_tokens"] == want.thinking_tokens and s1["waits_used"] == want.waits_used
    assert r.usage.completion_tokens_details.reasoning_tokens == want.compute_tokens
    if name != "budget_forcing":
        assert s1["method"] == name and s1["settings"] == {**s1["settings"], **SETTINGS[name]}
        assert s1["probe_tokens"] == want.probe_tokens == sum(p["tokens"] for p in s1["probes"])
        assert [p["answer"] for p in s1["probes"]] == [p.answer for p in want.probes]
        assert s1["exited"] == want.exited and s1["tokens_saved"] == BUDGET - want.compute_tokens
        assert s1["converged_at"] == (want.thinking_tokens if want.exited else None)


def test_probing_methods_really_probe_and_exit_on_the_tiny_model(tiny_engine):
    """The offline runs the served ones are compared with take probes and exit (so the comparison covers them)."""
    for name in ("early_exit", "confidence_exit"):
        want = offline(tiny_engine, name, SETTINGS[name])
        assert want.probes and want.probe_tokens > 0, name
    assert offline(tiny_engine, "confidence_exit", SETTINGS["confidence_exit"]).exited


# sample seed -> (answer, thinking tokens): "5" is held by two long samples, "3" by one short one
SCRIPT = {0: ("Answer: 5", 10), 1: ("Answer: 5", 10), 2: ("Answer: 3", 2)}


class ScriptedSamples(WrappedEngine):
    """The tiny engine with each row's answer and thinking length set by the seed it samples with."""

    def generate_forced(self, prompts, specs, sampling, seeds=None, **kw):
        res = self.inner.generate_forced(prompts, specs, sampling, seeds=seeds, **kw)
        out = []
        for r, seed in zip(res, row_seeds(prompts, specs, sampling, seeds)):
            answer, length = SCRIPT[seed % len(SCRIPT)]
            out.append(r.model_copy(update={"answer": answer, "thinking_tokens": length}))
        return out


@pytest.mark.parametrize("name,winner", [("majority_voting", "5"), ("shortest_majority", "3")])
def test_a_served_vote_picks_what_the_method_s_combine_picks(tiny_engine, name, winner):
    engine = ScriptedSamples(tiny_engine)
    service = S1Service("", engine_obj=engine, model_name="tiny", batch_wait_timeout_s=0.05, default_answer_tokens=4,
                        unlimited_thinking_tokens=64, api_key_env="S1FLOW_METHODS_TEST_NO_KEY")
    with serving(service) as base:
        c = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTION}], n=3, seed=0,
                                      temperature=1.0, max_tokens=4, extra_body={"method": name,
                                                                                  "max_thinking_tokens": 8})
    service.close()
    prompt = thinking_prompt(tiny_engine.tokenizer, QUESTION)
    samples = [engine.generate_forced([prompt], [BudgetSpec(max_thinking_tokens=8, max_answer_tokens=4)],
                                      Sampling(temperature=1.0, seed=i)) for i in range(3)]
    want = build(name, Forcing(), {}, []).combine(samples)[0]
    assert len(r.choices) == 1
    s1 = r.choices[0].model_extra["s1"]
    assert s1["method"] == name and s1["voted_answer"] == extract_answer(want.answer) == winner
    assert r.choices[0].message.content == f"Answer: {winner}"
    assert r.usage.completion_tokens_details.reasoning_tokens == want.thinking_tokens == 22


@pytest.mark.parametrize("extra,param", [
    ({"method": "early_exit", "probe_every": 0}, "probe_every"),
    ({"method": "early_exit", "compare": "loose"}, "compare"),
    ({"method": "scheduled_waits", "alpha": "half"}, "alpha"),
    ({"method": "confidence_exit", "transitions": []}, "transitions"),
    ({"method": "confidence_exit", "probe_every": 4}, "probe_every"),  # another method's setting
    ({"alpha": 0.5}, "alpha"),  # a setting of a method not asked for
    ({"method": "rebase"}, "method"),
    ({"method": "early_exit", "num_waits": 2}, "num_waits"),  # refused by the method for this request
    ({"budget": "auto", "method": "scheduled_waits"}, "budget"),
    ({"budget": "sometimes"}, "budget"),
    ({"max_latency_s": 1.0}, "max_latency_s"),
    ({"budget": "auto", "max_compute_tokens": 0}, "max_compute_tokens"),
    ({"method": "early_exit", "stream": True}, "method"),
    ({"method": "shortest_majority", "stream": True}, "method"),
    ({"method": "early_exit", "answer_tokens": 9}, "answer_tokens"),  # longer than the answer cap (max_tokens 4)
    ({"method": "early_exit", "probe_every": 2}, "probe_every"),  # closer than a replica allows
    ({"method": "confidence_exit", "transitions": ["x"] * 17}, "transitions"),  # more strings than a request may
    ({"method": "majority_voting", "samples": [2]}, "samples"),  # N is the request's n
])
def test_bad_method_settings_are_400s_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTION}],
                                       max_tokens=4, extra_body={"max_thinking_tokens": 8, **extra})
    assert e.value.status_code == 400
    assert e.value.body["param"] == param, e.value.body
    assert e.value.body["message"].startswith(param), e.value.body


def test_budget_auto_stops_by_convergence_and_reports_its_probes(client, tiny_engine):
    settings = {"probe_every": 4, "agree": 2, "answer_tokens": 4}
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=ANSWER,
        extra_body={"budget": "auto", "max_thinking_tokens": BUDGET, "final_answer_prefix": "Answer:", **settings})
    s1, want = r.choices[0].model_extra["s1"], offline(tiny_engine, "early_exit", settings)
    assert s1["budget"] == "auto" and s1["method"] == "early_exit" and s1["cap"] == BUDGET
    assert s1["probes"] and len(s1["probes"]) == len(want.probes)
    assert all(p["thinking_tokens"] % 4 == 0 for p in s1["probes"])
    assert s1["thinking_tokens"] == want.thinking_tokens and s1["exited"] == want.exited
    assert s1["stopped_by"] == ("converged" if want.exited else "budget" if want.hit_budget else "model")
    if want.exited:
        assert s1["converged_at"] == want.thinking_tokens == s1["probes"][-1]["thinking_tokens"]
    details = r.usage.completion_tokens_details
    assert details.model_extra["probe_tokens"] == s1["probe_tokens"] == want.probe_tokens > 0
    assert details.reasoning_tokens == s1["thinking_tokens"] + s1["probe_tokens"] == s1["compute_tokens"]
    assert s1["tokens_saved"] == BUDGET - s1["compute_tokens"]


def test_budget_auto_compute_cap_bounds_thinking_and_probes(client):
    r = client.completions.create(model="tiny", prompt=QUESTION, max_tokens=4, extra_body={
        "budget": "auto", "max_thinking_tokens": 48, "max_compute_tokens": 10, "probe_every": 4, "agree": 8})
    s1 = r.choices[0].model_extra["s1"]
    assert s1["cap"] == 10 and s1["thinking_tokens"] <= 10
    assert s1["stopped_by"] in ("max_compute_tokens", "budget", "model"), s1  # agree=8 never converges here
    if s1["stopped_by"] == "max_compute_tokens":
        assert s1["probes"][-1]["thinking_tokens"] + s1["probe_tokens"] >= 10


def test_method_requests_share_the_replica_and_give_their_capacity_back(url, client):
    def one(i):
        extra = {"max_thinking_tokens": 16}
        if i % 2:
            extra.update(method="early_exit", probe_every=4)
        return client.completions.create(model="tiny", prompt=f"What is {i} + {i}?", max_tokens=4, n=2,
                                         extra_body=extra)
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(one, range(6)))
    assert all(len(o.choices) == 2 for o in outs)
    assert all("probes" in o.choices[0].model_extra["s1"] for o in outs[1::2])
    assert httpx.get(f"{url}/health").json()["in_flight"] == 0


class SlowOrPoisoned(Engine):
    """Each forced call takes a second; a prompt containing POISON fails inside the engine."""

    def generate_forced(self, prompts, specs, sampling, **kw):
        import time
        if any("POISON" in self.tokenizer.decode(p) for p in prompts):
            raise RuntimeError("engine blew up on this prompt")
        time.sleep(1.0)
        return self.inner.generate_forced(prompts, specs, sampling, **kw)


def test_a_failing_or_dropped_method_request_takes_nothing_else_down(tiny_engine):
    import time
    service = S1Service("", engine_obj=SlowOrPoisoned(tiny_engine), model_name="tiny", batch_wait_timeout_s=0.05,
                        default_answer_tokens=4, unlimited_thinking_tokens=64,
                        api_key_env="S1FLOW_METHODS_TEST_NO_KEY")
    body = {"model": "tiny", "max_thinking_tokens": 8, "max_tokens": 4, "method": "scheduled_waits", "alpha": 0.5}
    with serving(service) as base:
        def post(content, **kw):
            return httpx.post(f"{base}/v1/chat/completions", timeout=kw.pop("timeout", 60),
                              json={**body, "messages": [{"role": "user", "content": content}]})
        with ThreadPoolExecutor(2) as pool:
            bad, good = pool.map(post, ["POISON", "What is 2 + 2?"])
        assert bad.status_code == 500 and good.status_code == 200, (bad.text, good.text)
        with pytest.raises(httpx.ReadTimeout):  # the client leaves while its run waits on the engine
            httpx.post(f"{base}/v1/chat/completions", timeout=httpx.Timeout(30, read=0.3),
                       json={**body, "n": 3, "messages": [{"role": "user", "content": "q"}]})
        deadline = time.monotonic() + 10
        while service.inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.inflight == 0
        assert post("What is 1 + 1?").status_code == 200
    service.close()


def test_a_cancelled_run_stops_at_its_next_engine_call(tiny_engine):
    async def go():
        service = S1Service("", engine_obj=Engine(tiny_engine), model_name="tiny", unlimited_thinking_tokens=64,
                            api_key_env="S1FLOW_METHODS_TEST_NO_KEY")
        view = ServedEngine(service, asyncio.get_running_loop())
        view.cancel()
        with pytest.raises(Cancelled):
            await asyncio.to_thread(view.generate, [[1, 2]], Sampling(max_new_tokens=2))
        service.close()
    asyncio.run(go())


def test_every_served_method_s_settings_are_request_fields_of_their_own():
    request_fields = set(ChatRequest.model_fields) | set(CompletionRequest.model_fields)
    assert not set(settings_owners()) & request_fields
    assert set(SERVED) >= set(SETTINGS) | {"majority_voting", "shortest_majority"}
