"""``method: majority_voting`` through the API (uvicorn, tiny HF engine whose answers are set per seed).

With ``n`` samples the reply carries one choice per prompt: the voted answer (grading-
equivalent answers grouped, as ``components.inference.methods.voting.vote`` does) and, in
``choices[i].s1.samples``, every sample.
"""
import httpx
import pytest

from components.inference.engine import row_seeds
from components.inference.methods.voting import vote
from components.serving.service import S1Service
from tests.support.local_server import WrappedEngine, serving

# sample i uses seed + i; the tiny model's answers are replaced by these per seed
ANSWERS = {0: "Answer: 3", 1: "Answer: 1/2", 2: "Answer: 0.5", 3: "Answer: \\frac{1}{2}", 4: "Answer: 3"}


class SeededAnswers(WrappedEngine):
    """The tiny engine, with each row's answer text chosen by the seed it samples with."""

    def generate_forced(self, prompts, specs, sampling, seeds=None, **kw):
        res = self.inner.generate_forced(prompts, specs, sampling, seeds=seeds, **kw)
        return [r.model_copy(update={"answer": ANSWERS[seed % len(ANSWERS)]})
                for r, seed in zip(res, row_seeds(prompts, specs, sampling, seeds))]


@pytest.fixture(scope="module")
def url(tiny_engine):
    service = S1Service("", engine_obj=SeededAnswers(tiny_engine), model_name="tiny", max_batch_size=8,
                        batch_wait_timeout_s=0.05, default_answer_tokens=4, unlimited_thinking_tokens=64,
                        api_key_env="S1FLOW_VOTING_TEST_NO_KEY")
    with serving(service) as base:
        yield base


def post(url, route, **body):
    body = {"model": "tiny", "max_thinking_tokens": 4, "max_tokens": 4, "temperature": 1.0, **body}
    return httpx.post(f"{url}/v1/{route}", json=body, timeout=120)


def test_chat_majority_voting_groups_equivalent_answers(url):
    r = post(url, "chat/completions", messages=[{"role": "user", "content": "What is 1/2?"}], n=4, seed=0,
             method="majority_voting")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    s1 = choice["s1"]
    # seeds 0..3: "3", "1/2", "0.5", "\frac{1}{2}" -> the 1/2 group (3 votes) beats "3" (1 vote)
    assert [s["extracted_answer"] for s in s1["samples"]] == ["3", "1/2", "0.5", "\\frac{1}{2}"]
    assert s1["method"] == "majority_voting", s1
    assert s1["votes"] == 3, s1
    assert s1["voted_sample"] == 1, s1
    assert s1["votes"] == 3 and s1["voted_sample"] == 1
    assert s1["voted_answer"] == "1/2" == vote([s["extracted_answer"] for s in s1["samples"]])
    assert choice["message"]["content"] == "Answer: 1/2"
    assert [s["text"] for s in s1["samples"]] == [ANSWERS[i] for i in range(4)]
    assert all(s["reasoning_content"] is not None for s in s1["samples"])
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == sum(s["thinking_tokens"]
                                                                                for s in s1["samples"])


def test_completions_majority_voting_one_choice_per_prompt(url):
    # prompt 1 gets seeds 0..2 ("3", "1/2", "0.5" -> 1/2 wins 2:1); prompt 2 the same seeds
    r = post(url, "completions", prompt=["What is 1/2?", "And again?"], n=3, seed=0, method="majority_voting")
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    for c in choices:
        assert c["text"] == "Answer: 1/2" and c["s1"]["votes"] == 2 and len(c["s1"]["samples"]) == 3


def test_majority_voting_votes_on_stop_cut_answers_and_ties_go_first(url):
    # seeds 4, 0: "3" and "3" -> 2 votes; with seed 3, 4: "\frac{1}{2}" vs "3" tie -> the first seen
    r = post(url, "chat/completions", messages=[{"role": "user", "content": "q"}], n=2, seed=3,
             method="majority_voting")
    assert r.json()["choices"][0]["s1"]["voted_answer"] == "\\frac{1}{2}"
    r = post(url, "chat/completions", messages=[{"role": "user", "content": "q"}], n=2, seed=3,
             method="majority_voting", stop=["{1}"])
    s1 = r.json()["choices"][0]["s1"]
    assert [s["text"] for s in s1["samples"]] == ["Answer: \\frac", "Answer: 3"]
    assert r.json()["choices"][0]["finish_reason"] == "stop"


def test_plain_n_keeps_n_choices_and_voting_cannot_stream(url):
    r = post(url, "chat/completions", messages=[{"role": "user", "content": "q"}], n=3, seed=0)
    assert [c["message"]["content"] for c in r.json()["choices"]] == [ANSWERS[i] for i in range(3)]
    r = post(url, "chat/completions", messages=[{"role": "user", "content": "q"}], n=1, seed=0,
             method="majority_voting", stream=True)
    assert r.status_code == 400 and "majority_voting" in r.json()["error"]["message"]
    r = post(url, "chat/completions", messages=[{"role": "user", "content": "q"}], method="best_of_n")
    assert r.status_code == 400 and r.json()["error"]["param"] == "method"


class PathologicalAnswers(WrappedEngine):
    """Samples answer ``\\boxed{9^{9^{9}}}`` (~370 million digits, were it computed) and ``\\boxed{2}`` by turns."""

    def generate_forced(self, prompts, specs, sampling, seeds=None, **kw):
        res = self.inner.generate_forced(prompts, specs, sampling, seeds=seeds, **kw)
        return [r.model_copy(update={"answer": "\\boxed{9^{9^{9}}}" if seed % 2 == 0 else "\\boxed{2}"})
                for r, seed in zip(res, row_seeds(prompts, specs, sampling, seeds))]


def test_health_answers_while_a_pathological_vote_is_in_flight(tiny_engine):
    import threading
    import time
    service = S1Service("", engine_obj=PathologicalAnswers(tiny_engine), model_name="tiny", batch_wait_timeout_s=0.05,
                        default_answer_tokens=4, unlimited_thinking_tokens=64, api_key_env="S1FLOW_VOTING_TEST_NO_KEY",
                        grading_timeout_s=1.0, vote_timeout_s=3.0)
    with serving(service) as base:
        out = {}
        voter = threading.Thread(target=lambda: out.update(r=post(
            base, "chat/completions", messages=[{"role": "user", "content": "What is 9^9^9?"}], n=4, seed=0,
            method="majority_voting")))
        voter.start()
        time.sleep(0.5)
        for _ in range(3):
            t = time.monotonic()
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
            assert time.monotonic() - t < 1.0
            time.sleep(0.3)
        voter.join(timeout=60)
        r = out["r"]
        assert r.status_code == 200, r.text
        s1 = r.json()["choices"][0]["s1"]
        assert [s["extracted_answer"] for s in s1["samples"]] == ["9^{9^{9}}", "2", "9^{9^{9}}", "2"]
        assert s1["votes"] == 2  # the identical answers still group; the unsettled comparison counts as different
    service.close()
