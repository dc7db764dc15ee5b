"""The s1.1-32b path on fixtures, in the rehearsal's style (the profile's own settings, local stand-ins for what
it downloads and calls): s1K-1.1's rows read by name into trace records the tokenize stage renders in s1's chat
format, and the rows without a published trace re-distilled by the profile's DeepSeek teacher against a local
server in DeepSeek's shape, its thinking read from ``reasoning_content``."""
import json

import pytest

from components.config import ModelConfig, load_config
from components.data.collect_stage import collect_stage
from components.distill.distill_stage import distill_stage, split_published
from components.formatting import ANSWER_START, IM_END, THINK_START
from components.paths import Paths
from components.records import Example, Question, Trace, read_jsonl, write_jsonl
from components.training.tokenize_stage import tokenize_stage
from tests.conftest import REPO
from tests.support.deepseek_server import deepseek_server

FIXTURE = REPO / "tests/fixtures/s1k_1_1/s1K-1.1.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def _profile(**source):
    """s1.1-32b with its hub source read from the fixture (kind and path only: its fields are the profile's)."""
    cfg = load_config(REPO / "params.yaml", "s1.1-32b")
    src = cfg.pool.sources[0].model_copy(update={"kind": "jsonl", "path": str(FIXTURE), **source})
    return cfg.model_copy(update={"pool": cfg.pool.model_copy(update={"sources": [src]}),
                                  "heldout": cfg.heldout.model_copy(update={"size": 4})})


def test_the_published_traces_reach_sft_in_the_s1_format_without_a_teacher_call(tmp_path):
    cfg, paths = _profile(limit=2), Paths.for_profile("s1.1-32b", tmp_path)
    collected = collect_stage(cfg.pool, cfg.heldout, paths)
    assert collected["sources"]["simplescaling/s1K-1.1"]["published_traces"] == 2
    report = distill_stage(cfg.teacher, paths)  # the profile's DeepSeek teacher: no key set, nothing asked
    assert (report["published"], report["done"], report["calls"], report["cost_usd"]) == (2, 2, 0, 0.0)
    traces = read_jsonl(paths.traces, Trace)
    assert [t.thinking for t in traces] == [r["deepseek_thinking_trajectory"] for r in ROWS[:2]]
    assert [t.answer for t in traces] == [r["deepseek_attempt"] for r in ROWS[:2]]
    assert {t.teacher for t in traces} == {"deepseek-r1"} and all(t.ok for t in traces)
    questions = read_jsonl(paths.pool, Question)
    assert [q.answer for q in questions] == ["2", ROWS[1]["solution"]]  # \boxed{} read; a whole-solution reference
    assert questions[0].metadata["source_type"] == "qfq/openaimath/Number Theory"

    write_jsonl(paths.selected, [Example(question=q, trace=t) for q, t in zip(questions, traces)])
    model = ModelConfig(source="hub", name=str(REPO / "releases/tiny-base"))  # a local tokenizer in Qwen's template
    tokenized = tokenize_stage(cfg.sft.block_size, model, paths)
    assert tokenized["kept"] == 2 and not tokenized["too_long"]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model.name)
    first = json.loads(paths.sft_tokens.read_text().splitlines()[0])
    target = tok.decode([i for i, lab in zip(first["input_ids"], first["labels"]) if lab != -100])
    assert target == (f"{THINK_START}{ROWS[0]['deepseek_thinking_trajectory']}\n{ANSWER_START}"
                      f"{ROWS[0]['deepseek_attempt']}{IM_END}")


def test_use_published_false_sends_every_question_to_the_teacher(tmp_path):
    cfg, paths = _profile(), Paths.for_profile("s1.1-32b", tmp_path)
    collect_stage(cfg.pool, cfg.heldout, paths)
    questions = read_jsonl(paths.pool, Question)
    published, asked = split_published(questions, cfg.teacher)
    assert len(published) == 2 and [q.question for q in asked] == [ROWS[2]["question"]]  # its trace is empty
    published, asked = split_published(questions, cfg.teacher.model_copy(update={"use_published": False}))
    assert not published and len(asked) == 3


def _reasoning(question: str) -> tuple[str, str]:
    return f"We need {question} 17 + 20 = 37, 37 + 5 = 42. Wait, check: 42 - 25 = 17.", "The sum is 42.\n\nAnswer: 42"


@pytest.mark.timeout(300)
def test_a_row_without_a_published_trace_is_distilled_by_the_profile_teacher_from_reasoning_content(
        tmp_path, monkeypatch):
    import ray
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-local")
    ray.shutdown()  # the teacher's workers read the key from their node's environment: a Ray started after it
    cfg, paths = _profile(), Paths.for_profile("s1.1-32b", tmp_path)
    collect_stage(cfg.pool, cfg.heldout, paths)
    with deepseek_server(_reasoning) as server:
        teacher = cfg.teacher.model_copy(update={"base_url": server.base_url, "shard_uri": None, "workers": 1,
                                                 "concurrency": 2})
        report = distill_stage(teacher, paths)
    assert (report["published"], report["done"], report["failed"], report["calls"]) == (2, 3, 0, 1)
    sent = server.requests[0]
    assert sent["model"] == "deepseek-v4-pro" and sent["thinking"] == {"type": "enabled"}
    assert sent["reasoning_effort"] == "high" and sent["messages"] == [{"role": "user", "content": ROWS[2]["question"]}]
    assert server.headers[0]["authorization"] == "Bearer sk-local"
    traces = read_jsonl(paths.traces, Trace)
    reasoning, answer = _reasoning(ROWS[2]["question"])
    assert [t.teacher for t in traces] == ["deepseek-r1", "deepseek-r1", "deepseek-v4-pro"]
    assert traces[2].ok and (traces[2].thinking, traces[2].answer) == (reasoning, answer)
    assert traces[2].completion_tokens == len(reasoning.split()) + len(answer.split())  # usage billed as reported
