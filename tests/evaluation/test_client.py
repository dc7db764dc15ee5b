"""The Serve-path sweep client against a scripted OpenAI-compatible client (no server needed): what each
request carries, failed requests, resuming, the run key, and scoring only the current sweep."""
import asyncio
import json
from types import SimpleNamespace

from components.config import EvaluateConfig, ServeConfig
from components.evaluation.client import EndpointSweep, run_endpoint_sweep
from components.evaluation.served import evaluate_via_serve
from components.records import Question

QS = [Question(id=f"q{i}", source="t", question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(4)]


class FakeClient:
    """Answers 'Answer: <2i>' to 'What is i + i?' and raises for questions in ``fail``."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    async def create(self, **kw):
        self.calls.append(kw)
        text = kw["messages"][0]["content"]
        if text in self.fail:
            raise RuntimeError("This model's maximum context length is 64 tokens")
        if text.startswith("What is"):
            answer = f"Answer: {2 * int(text.split()[2])}"
        else:
            answer = "A careful check gives (C)"
        budget = kw["extra_body"]["max_thinking_tokens"] or 40
        usage = SimpleNamespace(completion_tokens=budget + 3,
                                completion_tokens_details=SimpleNamespace(reasoning_tokens=budget))
        msg = SimpleNamespace(content=answer, model_extra={"reasoning_content": "thinking"})
        return SimpleNamespace(choices=[SimpleNamespace(message=msg, model_extra={"s1": {"waits_used": 0}})],
                               usage=usage)

    async def close(self):
        pass


def _sweep(**kw):
    base = dict(base_url="http://fake/v1", model="tiny", budgets=(4, 8), seeds=(0, 1), model_hash="abc",
                engine="hf test", thinking_cap=48)
    return EndpointSweep(**{**base, **kw})


def test_min_thinking_tokens_is_sent_on_the_serve_path(tmp_path):
    client = FakeClient()
    ev = EvaluateConfig(via="serve", budgets=[8, 16], min_thinking_tokens=6, seeds=[0])
    report, records = evaluate_via_serve(ev, ServeConfig(model_name="tiny"), "http://fake", QS[:2],
                                         tmp_path / "s.jsonl", "abc", engine="hf test", thinking_cap=48, client=client)
    assert len(client.calls) == 2 * 3
    assert {c["extra_body"]["min_thinking_tokens"] for c in client.calls} == {6}
    assert report["performance"] == 1.0 and report["failed_requests"] == 0 and report["complete"]


def test_a_failed_request_is_recorded_the_sweep_goes_on_and_the_next_run_retries_it(tmp_path):
    out = tmp_path / "s.jsonl"
    first = asyncio.run(run_endpoint_sweep(QS, _sweep(), out, client=FakeClient(fail={QS[2].question})))
    assert len(first) == 16
    failed = [r for r in first if r.get("failed")]
    assert len(failed) == 4 and {r["question_id"] for r in failed} == {"q2"}
    assert all("maximum context length" in r["error"] for r in failed)
    assert all(r["correct"] for r in first if not r.get("failed"))
    retry = FakeClient()
    second = asyncio.run(run_endpoint_sweep(QS, _sweep(), out, client=retry))
    assert len(retry.calls) == 4 and {c["messages"][0]["content"] for c in retry.calls} == {QS[2].question}
    assert len(second) == 16 and not any(r.get("failed") for r in second)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 20  # 12 + 4 failed, then the 4 retried


def test_report_scores_only_the_current_questions_and_seeds(tmp_path):
    out = tmp_path / "serve_samples.jsonl"
    wrong = FakeClient()
    ev4 = EvaluateConfig(via="serve", budgets=[8], seeds=[0, 1])
    evaluate_via_serve(ev4, ServeConfig(model_name="tiny"), "http://fake", QS, out, "abc", client=wrong)
    # the same file, now a smaller sweep: 2 questions, 1 seed; nothing new to ask
    again = FakeClient()
    ev2 = EvaluateConfig(via="serve", budgets=[8], seeds=[0])
    report, records = evaluate_via_serve(ev2, ServeConfig(model_name="tiny"), "http://fake", QS[:2], out, "abc",
                                         client=again)
    assert again.calls == []
    assert {(r["question_id"], r["seed"]) for r in records} == {("q0", 0), ("q1", 0)}
    assert len(records) == 2 * 2  # budget 8 and the no-budget run
    assert report["scores"]["8"]["questions"] == 2 and report["scores"]["8"]["seeds"] == 1


def test_run_key_covers_engine_thinking_cap_and_grader_but_not_budgets_or_seeds():
    key = _sweep().run_key()
    assert _sweep(budgets=(1, 2, 3), seeds=(9,)).run_key() == key
    for change in ({"engine": "vllm 0.32.0"}, {"thinking_cap": 64}, {"grader_version": "older"},
                   {"min_thinking_tokens": 4}, {"model_hash": "def"}):
        assert _sweep(**change).run_key() != key, change


def test_gpqa_is_graded_by_its_final_choice_on_the_serve_path(tmp_path):
    q = Question(id="g1", source="gpqa_diamond", question="Which is a noble gas?\n\n(A) Iron\n(B) Sodium\n(C) Neon",
                 answer="C", metadata={"kind": "multiple_choice"})
    (r,) = asyncio.run(run_endpoint_sweep([q], _sweep(budgets=(8,), seeds=(0,)), tmp_path / "s.jsonl",
                                          client=FakeClient()))
    assert r["predicted"] == "C" and r["correct"]
