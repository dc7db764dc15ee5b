"""Shared fixtures: a tiny real tokenizer and Qwen2 model, built once per session."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")
os.environ["PREFECT_HOME"] = str(Path(__file__).resolve().parents[1] / ".prefect")  # never the user's or the demo's
# `make test` runs the suite in pytest-xdist workers side by side: each worker gets its share of the cores (for
# the stages and subprocesses it starts, through $S1FLOW_THREADS), so they are never oversubscribed. Set in the
# worker itself: the controlling process loads this file too, before the workers inherit its environment.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["S1FLOW_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
torch.set_num_threads(min(2, int(os.environ.get("S1FLOW_THREADS", 2))))
# Ray started by a test is its own: with no address, ray.init() joins any `ray start` cluster on the machine, such
# as another worker's two-node test cluster (whose second node then takes the Serve port this worker chose). Tests
# that use a cluster of their own name it in RAY_ADDRESS.
os.environ.setdefault("RAY_ADDRESS", "local")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained tiny Qwen2 + trained BPE tokenizer, saved like a hub model."""
    from components.config import ModelConfig, PoolConfig, PretrainConfig
    from components.data.base_model import build_model, corpus_questions, textbook_document
    from components.data.tokenizer import train_tokenizer

    pool = PoolConfig()
    qa = corpus_questions(PretrainConfig(documents=400), pool.domains, pool.min_difficulty, pool.max_difficulty)
    tok = train_tokenizer([textbook_document(q) for q, _ in qa], vocab_size=300)
    # head_dim 32: vLLM's CPU attention has no kernel for 16
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                    intermediate_size=128, max_position_embeddings=1024),
                        len(tok), tok.pad_token_id, tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from components.inference.hf_engine import HFEngine
    return HFEngine.from_pretrained(str(tiny_model_dir), batch_size=8, unlimited_thinking_tokens=64)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)
