"""The difficulty filter's ray.data.llm path: engine lengths that vLLM accepts for the model, per-question
budgets, and vLLM's finish reason recomputed from the columns ray.data.llm hands back."""
import json
import shutil

import pytest

from components.config import DifficultyConfig
from components.curation.ray_llm_students import (
    EngineSettings,
    engine_settings,
    finish_reason,
    postprocessor,
    processor_config,
    prompt_lengths,
)
from components.records import Question
from tests.support.vllm_venv import run_checks

S1_32B = DifficultyConfig(runner="ray_llm", workers=2, num_gpus=4, batch_size=256, max_new_tokens=32768)
EOS = 7


@pytest.fixture(scope="module")
def qwen_length_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with Qwen2.5-32B-Instruct's context: 32,768 positions."""
    out = tmp_path_factory.mktemp("positions_32768")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32768}))
    return out


def test_engine_length_fits_the_models_positions_and_vllm_accepts_it(qwen_length_model):
    """The engine kwargs handed to ray.data.llm fit a 32,768-position model; vLLM's own config check
    (run in the vLLM venv, as ray.data.llm's stage builds its engine args) accepts them and refuses the
    32,768 + 4,096 a prompt allowance on top of the generation budget would ask for."""
    settings = engine_settings(str(qwen_length_model), S1_32B, longest_prompt=900)
    config = processor_config(str(qwen_length_model), S1_32B, settings)
    assert settings.positions == 32768 and config.engine_kwargs["max_model_len"] == 32768
    assert config.engine_kwargs["tensor_parallel_size"] == 4 and config.concurrency == 2
    verdict = run_checks("tests.support.vllm_engine_args_check",
                         [str(qwen_length_model), json.dumps(config.engine_kwargs)], "ENGINE_ARGS")
    assert verdict == {"ok": True, "max_model_len": 32768}
    too_long = run_checks("tests.support.vllm_engine_args_check",
                          [str(qwen_length_model), json.dumps({"max_model_len": 32768 + 4096})], "ENGINE_ARGS")
    assert not too_long["ok"] and "VLLM_ALLOW_LONG_MAX_MODEL_LEN" in too_long["error"]


def test_short_budgets_keep_a_short_engine_and_prompts_get_what_the_length_leaves(qwen_length_model):
    small = engine_settings(str(qwen_length_model), DifficultyConfig(max_new_tokens=1000), longest_prompt=300)
    assert small.max_model_len == 300 + 1000  # the model has room: no need for all 32,768 positions
    full = engine_settings(str(qwen_length_model), S1_32B, longest_prompt=300)
    assert full.budget(100, 32768) == 32668 and full.budget(32768, 32768) == 0 and full.budget(10, 500) == 500
    questions = [Question(id="a", source="t", question="What is 2+2?", answer="4"),
                 Question(id="b", source="t", question="What is 2+2? " * 50, answer="4")]
    short, long = prompt_lengths(str(qwen_length_model), questions)
    assert 0 < short < long


def _row(q, text, generated, prompt_tokens, last_token, max_tokens, judge=False):
    return {"id": q.id, "question": q.model_dump_json(), "gold": q.answer, "max_tokens": max_tokens, "judge": judge,
            "generated_text": text, "num_generated_tokens": generated, "num_input_tokens": prompt_tokens,
            "generated_tokens": [3] * (generated - 1) + [last_token]}


def test_a_row_cut_at_the_engine_length_counts_as_not_solved():
    """A row whose prompt + generation reached the engine length finished with 'length' although it
    generated fewer tokens than max_new_tokens; its last line (the gold, restated while working) is no
    answer. The same text ending on the stop token is a finished attempt and solves it."""
    settings = EngineSettings(max_model_len=32768, positions=32768, stop_token_ids=frozenset({EOS, 9}))
    q = Question(id="q", source="t", question="What is 6 * 7?", answer="42")
    working = "First, 6 * 7 means six sevens.\n42"
    cut = _row(q, working, generated=30000, prompt_tokens=2768, last_token=3, max_tokens=32768)
    assert cut["num_generated_tokens"] < S1_32B.max_new_tokens  # not caught by comparing with max_new_tokens
    assert finish_reason(cut, 32768, settings.max_model_len, settings.stop_token_ids) == "length"
    post = postprocessor(settings)
    assert post(cut) == {"id": "q", "finish_reason": "length", "solved": False, "attempt": ""}
    stopped = _row(q, working, generated=30000, prompt_tokens=2768, last_token=EOS, max_tokens=32768)
    assert post(stopped) == {"id": "q", "finish_reason": "stop", "solved": True, "attempt": ""}  # stop tokens first
    budget_used = _row(q, "Answer: 42", generated=500, prompt_tokens=10, last_token=3, max_tokens=500)
    assert post(budget_used)["finish_reason"] == "length" and post(budget_used)["solved"]  # an answer was written
    short = _row(q, "Answer: 41", generated=5, prompt_tokens=10, last_token=9, max_tokens=500)
    assert post(short) == {"id": "q", "finish_reason": "stop", "solved": False, "attempt": ""}


def test_rows_for_the_judge_come_back_as_text_unless_cut_off_before_an_answer():
    """A row marked ``judge`` (its reference is a whole solution) is not graded: its attempt's text comes back
    for the judge, '' when it was cut off before writing an answer (never sent); ``solved`` stays false."""
    settings = EngineSettings(max_model_len=4096, positions=32768, stop_token_ids=frozenset({EOS}))
    q = Question(id="g", source="Idavidrein/gpqa", question="Which gas?", answer="Zinc displaces hydrogen: H2.",
                 metadata={"answer_format": "solution"})
    post = postprocessor(settings)
    done = _row(q, "Hydrogen.\nAnswer: (B) H2", generated=9, prompt_tokens=20, last_token=EOS, max_tokens=500,
                judge=True)
    assert post(done) == {"id": "g", "finish_reason": "stop", "solved": False, "attempt": "Hydrogen.\nAnswer: (B) H2"}
    cut = _row(q, "Zinc is above hydrogen, so", generated=500, prompt_tokens=20, last_token=3, max_tokens=500,
               judge=True)
    assert post(cut) == {"id": "g", "finish_reason": "length", "solved": False, "attempt": ""}
    answered = _row(q, "Answer: H2\nChecking: zinc", generated=500, prompt_tokens=20, last_token=3, max_tokens=500,
                    judge=True)
    assert post(answered)["attempt"] == "Answer: H2\nChecking: zinc"


def test_ray_llm_runner_sends_budgeted_rows_and_grades_what_comes_back(qwen_length_model, monkeypatch):
    """The runner end to end around a stand-in for the vLLM stage (no GPU here): the real settings,
    pre- and post-processing; the stand-in answers like vLLM's stage (text, token ids and counts)."""
    import ray.data
    import ray.data.llm

    from components.curation.ray_llm_students import ray_llm_attempts
    from tests.curation.test_filtering import _examples

    examples = _examples(n=6, malformed=0.0)
    seen = {}

    def fake_build_processor(config, preprocess, postprocess):
        seen["config"] = config

        def run(ds):
            rows = [preprocess(r) for r in ds.take_all()]
            seen["rows"] = rows
            out = []
            for i, r in enumerate(rows):
                text = f"Answer: {r['gold']}" if i % 2 == 0 else f"Working.\n{r['gold']}"
                last = EOS if i % 2 == 0 else 3
                generated = 5 if i % 2 == 0 else r["sampling_params"]["max_tokens"]
                out.append({**r, "generated_text": text, "num_generated_tokens": generated, "num_input_tokens": 20,
                            "generated_tokens": [3] * (generated - 1) + [last]})
            return ray.data.from_items([postprocess(r) for r in out])
        return run
    monkeypatch.setattr(ray.data.llm, "build_processor", fake_build_processor)
    solved, attempts = ray_llm_attempts(examples, str(qwen_length_model), S1_32B)
    assert seen["config"].engine_kwargs["max_model_len"] == 32768
    row = seen["rows"][0]
    # the prompt goes in as token ids of the chat template, tokenized in the driver by the pinned tokenizer
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_length_model))
    chat = tokenizer.apply_chat_template([{"role": "user", "content": examples[0].question.question}],
                                         tokenize=False, add_generation_prompt=True)
    assert row["tokenized_prompt"] == tokenizer(chat, add_special_tokens=False)["input_ids"]
    assert "messages" not in row and "prompt" not in row
    config = seen["config"]
    assert not (config.chat_template_stage or config.tokenize_stage or config.detokenize_stage)
    assert row["sampling_params"]["temperature"] == 0.0 and 32000 < row["sampling_params"]["max_tokens"] < 32768
    assert sorted(solved) == sorted(ex.question.id for ex in examples) and sum(solved.values()) == 3
    assert attempts == {} and not any(r["judge"] for r in seen["rows"])
    # with the judge on, the solution-reference rows come back as text (the cut one as nothing) and unsolved
    for ex in examples[:2]:
        ex.question.metadata["answer_format"] = "solution"
    solved, attempts = ray_llm_attempts(examples, str(qwen_length_model), S1_32B, judge=True)
    assert [r["judge"] for r in seen["rows"]] == [True, True, False, False, False, False]
    assert attempts == {examples[0].question.id: f"Answer: {examples[0].question.answer}"}
    assert not solved[examples[0].question.id] and not solved[examples[1].question.id] and sum(solved.values()) == 2


def test_the_students_memory_share_reaches_the_engine_when_set(qwen_length_model):
    """On a CPU vLLM reserves its memory share of RAM and refuses to start when less is free (ray.data.llm's
    default share is 0.92): the difficulty section's share goes into the engine kwargs."""
    settings = engine_settings(str(qwen_length_model), S1_32B, longest_prompt=100)
    assert "gpu_memory_utilization" not in processor_config(str(qwen_length_model), S1_32B, settings).engine_kwargs
    cpu = S1_32B.model_copy(update={"gpu_memory_utilization": 0.1})
    assert processor_config(str(qwen_length_model), cpu, settings).engine_kwargs["gpu_memory_utilization"] == 0.1


def test_a_student_loads_at_its_pinned_revision_everywhere(qwen_length_model, monkeypatch):
    """The driver's config, tokenizer and generation-config reads and the vLLM engine's weights and tokenizer all
    take the student's commit from difficulty.revisions; nothing runs the repository's code."""
    import transformers
    sha = "a09a35458c702b33eeacc393d103063234e8bc28"
    name = str(qwen_length_model)
    cfg = S1_32B.model_copy(update={"revisions": {name: sha}})
    seen = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.GenerationConfig):
        real = cls.from_pretrained.__func__

        def wrapped(klass, model, *args, _real=real, **kwargs):
            seen.append((klass.__name__, kwargs.get("revision")))
            return _real(klass, model, *args, **kwargs)
        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))
    settings = engine_settings(name, cfg, longest_prompt=100)
    assert {rev for _, rev in seen} == {sha} and {c for c, _ in seen} >= {"AutoConfig", "AutoTokenizer"}
    kwargs = processor_config(name, cfg, settings).engine_kwargs
    assert (kwargs["revision"], kwargs["tokenizer_revision"], kwargs["trust_remote_code"]) == (sha, sha, False)


def _fake_processor(seen: dict, events: list):
    """A stand-in for ray.data.llm's build_processor that records its config and rows and answers every row."""
    import ray.data

    def build(config, preprocess, postprocess):
        events.append("build_processor")
        seen["config"] = config

        def run(ds):
            rows = seen["rows"] = [preprocess(r) for r in ds.take_all()]
            return ray.data.from_items([postprocess({**r, "generated_text": f"Answer: {r['gold']}",
                                                     "num_generated_tokens": 3, "num_input_tokens": 20,
                                                     "generated_tokens": [3, 3, EOS]}) for r in rows])
        return run
    return build


def test_a_prompt_longer_than_four_thousand_tokens_keeps_its_whole_budget(qwen_length_model, monkeypatch):
    """The driver tokenizes before it sizes the engine: the engine length is the longest prompt plus
    max_new_tokens (the model has 32,768 positions), so a 5,000-token prompt is sent with all of its budget
    and Ray is up, with this project's settings, before ray.data.llm builds its processor."""
    import ray.data.llm

    import components.common.raycluster as raycluster
    from components.curation.ray_llm_students import prompt_tokens, ray_llm_attempts
    from tests.curation.test_filtering import _examples

    examples = _examples(n=2, malformed=0.0)
    examples[1].question.question = "Add these: " + " ".join(str(i % 97) for i in range(2500))
    short, long = map(len, prompt_tokens(str(qwen_length_model), [ex.question for ex in examples]))
    assert long > 4096 + 100
    seen, events = {}, []
    real_ensure = raycluster.ensure_ray
    monkeypatch.setattr(raycluster, "ensure_ray", lambda: (events.append("ensure_ray"), real_ensure())[1])
    monkeypatch.setattr(ray.data.llm, "build_processor", _fake_processor(seen, events))
    cfg = DifficultyConfig(runner="ray_llm", max_new_tokens=1000)
    solved, _ = ray_llm_attempts(examples, str(qwen_length_model), cfg)
    assert events == ["ensure_ray", "build_processor"]
    assert seen["config"].engine_kwargs["max_model_len"] == long + 1000
    assert [r["max_tokens"] for r in seen["rows"]] == [1000, 1000]
    assert solved == {ex.question.id: True for ex in examples}
