"""lm-evaluation-harness, unmodified, against our server (uvicorn, tiny HF engine).

``lm_eval --model local-completions`` and ``--model local-chat-completions`` run as
subprocesses on the local generate-until task in tests/fixtures/lm_eval/, with
``until`` set to a string that occurs in the tiny model's answers, so lm-eval's
``until`` must arrive as our ``stop`` and be applied by the server (lm-eval's API
models do not cut the text themselves). Budget fields travel through ``--gen_kwargs``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from components.serving.service import S1Service
from tests.support.local_server import serving

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

    model_args = f"model=tiny,base_url={url}/v1/{route},tokenized_requests=False,tokenizer_backend=None,max_retries=1"
    cmd = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args,
           "--tasks", "s1_tiny_gen", "--include_path", str(tasks), "--limit", str(LIMIT),
           "--gen_kwargs", f"max_thinking_tokens={THINK}", "--output_path", str(tmp_path / "out"), "--log_samples"]
    if model == "local-chat-completions":
        cmd.append("--apply_chat_template")
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "s1_tiny_gen" in proc.stdout and "exact_match" in proc.stdout, proc.stdout[-3000:]

    files = list((tmp_path / "out").rglob("samples_s1_tiny_gen_*.jsonl"))
    assert len(files) == 1, files
    samples = sorted((json.loads(line) for line in files[0].read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(LIMIT))
    got = [s["resps"][0][0] for s in samples]
    want = [_cut(r, stop) for r in raws]
    assert got == want, (stop, raws, got)  # our answers, cut at lm-eval's `until` by the server
    assert any(g != r for g, r in zip(got, raws)), (stop, raws)  # the stop really cut something
    assert all(stop not in g for g in got)
