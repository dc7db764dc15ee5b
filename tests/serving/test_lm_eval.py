"""lm-evaluation-harness, unmodified, against our server (uvicorn, tiny HF engine).

``lm_eval --model local-completions`` and ``--model local-chat-completions`` run as
subprocesses on the local generate-until task in tests/fixtures/lm_eval/, with
``until`` set to a string that occurs in the tiny model's answers, so lm-eval's
``until`` must arrive as our ``stop`` and be applied by the server (lm-eval's API
models do not cut the text themselves). Budget fields travel through ``--gen_kwargs``.

The project's s1 tasks (infra/lm_eval) run the same way: the fixture task s1_tiny_math500 is s1_math500 on a
local file, and its lm-eval score must equal s1flow's own evaluation of the same questions through the same
server. lm-eval's defaults (``max_gen_toks`` 256, no thinking budget) on a server with the tiny profile's
context must get answers, not 400s.
"""
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from components.data.tasks import load_task
from components.evaluation.client import EndpointSweep, run_endpoint_sweep
from components.evaluation.scoring import score_by_budget
from components.serving.service import S1Service
from tests.support.local_server import WrappedEngine, serving

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval"
KEY = "lm-eval-key"
THINK = 8  # max_thinking_tokens, sent by lm-eval through --gen_kwargs
LIMIT = 3


@pytest.fixture(scope="module")
def url(tiny_engine):
    os.environ["S1FLOW_LMEVAL_KEY"] = KEY
    service = S1Service("", engine_obj=tiny_engine, model_name="tiny", max_batch_size=8, batch_wait_timeout_s=0.05,
                        default_answer_tokens=8, unlimited_thinking_tokens=64, api_key_env="S1FLOW_LMEVAL_KEY")
    with serving(service) as base:
        yield base


def _docs() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "s1_tiny_gen.jsonl").read_text().splitlines() if line.strip()]


def _raw(url: str, route: str, question: str, max_tokens: int) -> str:
    """Our answer to ``question`` as lm-eval will ask it, without a stop string."""
    body = {"model": "tiny", "max_tokens": max_tokens, "temperature": 0, "seed": 1234, "max_thinking_tokens": THINK}
    if route == "completions":
        r = httpx.post(f"{url}/v1/completions", json={**body, "prompt": [question]},
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        r.raise_for_status()
        return r.json()["choices"][0]["text"]
    r = httpx.post(f"{url}/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": question}]},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def _stop_string(raws: list[str], until: list[str]) -> str:
    """A 2-character string first found inside some answer (not at its start), so the cut keeps a visible
    prefix; else the fixture's own ``until`` (the untrained tiny model often answers only newlines)."""
    for raw in raws:
        for i in range(1, len(raw) - 1):
            if raw.find(s := raw[i:i + 2]) > 0:
                return s
    if any(u in raw for u in until for raw in raws):
        return until[0]
    pytest.skip(f"no stop string to place in the tiny model's answers: {raws!r}")


def _cut(text: str, stop: str) -> str:
    i = text.find(stop)
    return text if i < 0 else text[:i]


def _run_lm_eval(url: str, model: str, tasks: Path, task: str, tmp_path: Path, limit: int,
                 gen_kwargs: str = "") -> tuple[list[dict], dict]:
    """``lm_eval`` on ``task`` (from the folder ``tasks``) against ``url``, offline: its logged samples in doc
    order and its results for the task."""
    route = "chat/completions" if model == "local-chat-completions" else "completions"
    model_args = f"model=tiny,base_url={url}/v1/{route},tokenized_requests=False,tokenizer_backend=None,max_retries=1"
    cmd = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--tasks", task,
           "--include_path", str(tasks), "--limit", str(limit), "--output_path", str(tmp_path / "out"),
           "--log_samples"]
    if gen_kwargs:
        cmd += ["--gen_kwargs", gen_kwargs]
    if model == "local-chat-completions":
        cmd.append("--apply_chat_template")
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert task in proc.stdout and "exact_match" in proc.stdout, proc.stdout[-3000:]
    files = list((tmp_path / "out").rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    samples = sorted((json.loads(line) for line in files[0].read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(limit))
    [results] = list((tmp_path / "out").rglob("results_*.json"))
    return samples, json.loads(results.read_text())["results"][task]


@pytest.mark.parametrize("model,route", [("local-completions", "completions"),
                                         ("local-chat-completions", "chat/completions")])
def test_lm_eval_drives_our_server_with_stop(url, tmp_path, model, route):
    cfg = yaml.safe_load((FIXTURES / "s1_tiny_gen.yaml").read_text())
    max_tokens = cfg["generation_kwargs"]["max_gen_toks"]
    docs = _docs()[:LIMIT]
    raws = [_raw(url, route.split("/")[0], d["question"], max_tokens) for d in docs]
    stop = _stop_string(raws, cfg["generation_kwargs"]["until"])
    # the fixture task with `until` set to that string and an absolute data path
    cfg["generation_kwargs"]["until"] = [stop]
    cfg["dataset_kwargs"]["data_files"]["test"] = str(FIXTURES / "s1_tiny_gen.jsonl")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "s1_tiny_gen.yaml").write_text(yaml.safe_dump(cfg))

    samples, _ = _run_lm_eval(url, model, tasks, "s1_tiny_gen", tmp_path, LIMIT, f"max_thinking_tokens={THINK}")
    got = [s["resps"][0][0] for s in samples]
    want = [_cut(r, stop) for r in raws]
    assert got == want, (stop, raws, got)  # our answers, cut at lm-eval's `until` by the server
    assert any(g != r for g, r in zip(got, raws)), (stop, raws)  # the stop really cut something
    assert all(stop not in g for g in got)


# -- lm-eval's defaults on a server shaped like the tiny profile's ----------------------------------------------------

class RecordingEngine(WrappedEngine):
    """The tiny engine with another context length; records the budget spec of every row it runs."""

    def __init__(self, inner, context_length: int):
        super().__init__(inner)
        self.context_length, self.specs = context_length, []

    def generate_forced(self, prompts, specs, sampling, **kw):
        self.specs += list(specs)
        return self.inner.generate_forced(prompts, specs, sampling, **kw)


@pytest.fixture(scope="module")
def tiny_profile_server(tiny_engine):
    """The tiny profile's serving geometry: its model's context, thinking cap and default answer length."""
    from components.config import parse_profile
    cfg = parse_profile({}, "tiny")
    engine = RecordingEngine(tiny_engine, cfg.model.max_position_embeddings)
    os.environ["S1FLOW_LMEVAL_KEY"] = KEY
    service = S1Service("", engine_obj=engine, model_name="tiny", max_batch_size=8, batch_wait_timeout_s=0.05,
                        default_answer_tokens=cfg.serve.default_answer_tokens,
                        unlimited_thinking_tokens=cfg.engine.unlimited_thinking_tokens, api_key_env="S1FLOW_LMEVAL_KEY")
    with serving(service) as base:
        yield base, engine, cfg


def test_lm_eval_defaults_get_answers_never_a_400_for_a_budget_they_did_not_ask_for(tiny_profile_server, tmp_path):
    """lm-eval's default generation settings (max_gen_toks 256 as max_tokens, no thinking budget): every request
    reaches the engine with the largest thinking budget its context leaves, below the server's cap."""
    url, engine, cfg = tiny_profile_server
    task = yaml.safe_load((FIXTURES / "s1_tiny_gen.yaml").read_text())
    del task["generation_kwargs"]  # lm-eval's defaults
    task["dataset_kwargs"]["data_files"]["test"] = str(FIXTURES / "s1_tiny_gen.jsonl")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "s1_tiny_gen.yaml").write_text(yaml.safe_dump(task))
    engine.specs.clear()
    samples, _ = _run_lm_eval(url, "local-chat-completions", tasks, "s1_tiny_gen", tmp_path, 2)
    assert all(isinstance(s["resps"][0][0], str) for s in samples)
    assert len(engine.specs) == 2, engine.specs  # both requests were answered by the engine, none refused
    context, cap = cfg.model.max_position_embeddings, cfg.engine.unlimited_thinking_tokens
    for spec in engine.specs:
        assert spec.max_answer_tokens == 256  # lm-eval's default max_gen_toks, as max_tokens
        assert 0 < spec.max_thinking_tokens < cap and spec.max_thinking_tokens + 256 < context


def test_an_explicit_budget_too_large_for_the_context_gets_a_400_naming_max_thinking_tokens(tiny_profile_server):
    """The same request as lm-eval's with ``--gen_kwargs max_thinking_tokens=<the cap>``: within the cap but, with
    a 256-token answer, over the context. (A budget over the cap: tests/serving/test_service.py.)"""
    url, _, cfg = tiny_profile_server
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 256,
            "temperature": 0.0, "stop": [], "seed": 1234, "max_thinking_tokens": cfg.engine.unlimited_thinking_tokens}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "max_thinking_tokens" in err["message"], err


# -- the project's s1 task, scored by lm-eval and by s1flow ------------------------------------------------------------

# A final answer appended to the tiny model's own answer, per question (the untrained model answers nothing
# gradable): correct, wrong, equal only by math-verify, boxed, and none at all.
SCRIPT = {"912 + 687": "Final Answer: 1599", "x - 596 = 880": "Final Answer: 1475", "7 / 2": "Final Answer: 3.5",
          "digit sum of 10059": "so it is \\boxed{15}", "14 + 27": ""}
SCRIPT_CORRECT = [True, False, True, True, False]


class ScriptedAnswers(WrappedEngine):
    """The tiny engine, each answer followed by the line :data:`SCRIPT` gives its question."""

    def generate_forced(self, prompts, specs, sampling, **kw):
        results = self.inner.generate_forced(prompts, specs, sampling, **kw)
        out = []
        for prompt, r in zip(prompts, results):
            text = self.tokenizer.decode(prompt)
            [line] = [v for k, v in SCRIPT.items() if k in text]
            out.append(r.model_copy(update={"answer": f"{r.answer}\n{line}"}))
        return out


@pytest.fixture(scope="module")
def scripted_url(tiny_engine):
    os.environ["S1FLOW_LMEVAL_KEY"] = KEY
    service = S1Service("", engine_obj=ScriptedAnswers(tiny_engine), model_name="tiny", max_batch_size=8,
                        batch_wait_timeout_s=0.05, default_answer_tokens=8, unlimited_thinking_tokens=64,
                        api_key_env="S1FLOW_LMEVAL_KEY")
    with serving(service) as base:
        yield base


def test_the_s1_math500_task_scores_what_s1flows_evaluation_scores(scripted_url, tmp_path):
    """s1_math500 (infra/lm_eval) on the fixture's questions through lm-eval's local-chat-completions, and s1flow's
    own evaluation (its task loader, its sweep client, its grading) of the same questions through the same server
    with the same settings: the same answers, graded alike, the same score."""
    from lm_eval.tasks._yaml_loader import load_yaml
    data = FIXTURES / "s1_tiny_math500.jsonl"
    gen = {**load_yaml(FIXTURES / "s1_tiny_math500.yaml", resolve_func=False)["generation_kwargs"],
           "max_thinking_tokens": THINK, "max_gen_toks": 16}  # the tiny model's context: a short answer
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "s1_tiny_math500.yaml").write_text(yaml.safe_dump(
        {"include": str(FIXTURES / "s1_tiny_math500.yaml"), "dataset_kwargs": {"data_files": {"test": str(data)}}}))
    questions = load_task("math500", path=data)
    samples, results = _run_lm_eval(scripted_url, "local-chat-completions", tasks, "s1_tiny_math500", tmp_path,
                                    len(questions), f"max_thinking_tokens={THINK},max_gen_toks=16")

    sweep = EndpointSweep(base_url=f"{scripted_url}/v1", model="tiny", budgets=(THINK,), seeds=(0,),
                          temperature=gen["temperature"], max_answer_tokens=gen["max_gen_toks"],
                          final_answer_prefix=gen["final_answer_prefix"], concurrency=1, api_key=KEY)
    records = asyncio.run(run_endpoint_sweep(questions, sweep, tmp_path / "s1flow.jsonl"))
    assert not any(r.get("failed") for r in records), records

    assert [s["doc"]["question"] for s in samples] == [q.question for q in questions]
    assert [s["resps"][0][0] for s in samples] == [r["answer"] for r in records]  # same requests, same answers
    assert [bool(s["exact_match"]) for s in samples] == [r["correct"] for r in records] == SCRIPT_CORRECT
    ours = score_by_budget(records)[str(THINK)]["avg@1"]
    assert results["exact_match,none"] == pytest.approx(ours) == pytest.approx(0.6)
