"""The plain-generation half of the engine protocol (HF backend, tiny untrained Qwen2)."""
import pytest

from components.inference.engine import Sampling

PROMPTS = ["<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n", "Problem: What is 12 + 30?\n"]


def test_max_new_tokens_and_length_finish(tiny_engine):
    v = tiny_engine.vocab
    out = tiny_engine.generate(PROMPTS, Sampling(max_new_tokens=7, banned_token_ids=v.stop_ids))
    for c in out:
        assert c.completion_tokens == 7 and c.finish_reason == "length" and len(c.token_ids) == 7
        assert not set(c.token_ids) & set(v.stop_ids)
        assert c.prompt_tokens > 0


def test_stop_token_ends_generation(tiny_engine):
    v = tiny_engine.vocab
    out = tiny_engine.generate(PROMPTS, Sampling(max_new_tokens=20, logit_bias={v.end_id: 1e4}))
    for c in out:
        assert c.token_ids == [v.end_id] and c.finish_reason == "stop" and c.text == ""


def test_min_new_tokens_delays_stop(tiny_engine):
    v = tiny_engine.vocab
    out = tiny_engine.generate(PROMPTS, Sampling(max_new_tokens=20, min_new_tokens=5, logit_bias={v.end_id: 1e4}))
    for c in out:
        assert c.completion_tokens == 6 and c.token_ids[-1] == v.end_id


def test_custom_stop_tokens(tiny_engine):
    tok = tiny_engine.tokenizer
    seven = tok.convert_tokens_to_ids("7")
    out = tiny_engine.generate(PROMPTS[:1], Sampling(max_new_tokens=20, stop_token_ids=(seven,),
                                                     logit_bias={seven: 1e4}))
    assert out[0].token_ids == [seven] and out[0].finish_reason == "stop"


def test_sampling_is_seeded(tiny_engine):
    s = Sampling(temperature=1.0, top_p=0.9, seed=5, max_new_tokens=12)
    a, b = tiny_engine.generate(PROMPTS, s), tiny_engine.generate(PROMPTS, s)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_p=0), dict(min_new_tokens=9, max_new_tokens=3)])
def test_bad_sampling_rejected(kwargs):
    with pytest.raises(ValueError):
        Sampling(**kwargs)


def test_the_factory_builds_the_configured_engine_with_the_whole_protocol(tiny_model_dir):
    import sys

    from components.config import EngineConfig
    from components.inference.budget_forcing import ForcingVocab
    from components.inference.engine import build_engine
    engine = build_engine(EngineConfig(backend="hf", batch_size=3, unlimited_thinking_tokens=17), "float32",
                          tiny_model_dir)
    assert (engine.name, engine.batch_size, engine.unlimited) == ("hf", 3, 17)
    assert isinstance(engine.vocab, ForcingVocab) and engine.context_length == 1024
    assert build_engine(EngineConfig(batch_size=3), "float32", tiny_model_dir, batch_size=5).batch_size == 5
    assert "vllm" not in sys.modules  # the vLLM engine's module loads only when it is built


def test_engine_problem_names_what_is_missing():
    from components.inference.engine import engine_problem
    assert engine_problem("hf") is None
    assert "not an engine" in engine_problem("tgi")


def test_the_vllm_backend_gets_the_sections_scheduler_options(monkeypatch):
    """Chunked prefill's step budget and a fixed KV cache reach vLLM's engine from the engine section (and only
    when set: vLLM's defaults otherwise)."""
    import importlib
    import types

    from components.config import EngineConfig
    from components.inference.engine import build_engine
    seen = {}

    class Fake:
        @classmethod
        def from_pretrained(cls, path, dtype, **kw):
            seen.update(kw)
            return cls()

    monkeypatch.setattr(importlib, "import_module", lambda name: types.SimpleNamespace(VLLMEngine=Fake))
    build_engine(EngineConfig(backend="vllm", max_num_batched_tokens=64, kv_cache_blocks=8), "float32", "m")
    assert seen["max_num_batched_tokens"] == 64 and seen["kv_cache_blocks"] == 8
    seen.clear()
    build_engine(EngineConfig(backend="vllm"), "float32", "m")
    assert "max_num_batched_tokens" not in seen and "kv_cache_blocks" not in seen


def test_the_engine_loads_a_model_at_its_pinned_revision_without_its_code(tiny_model_dir, monkeypatch):
    import transformers

    from components.config import EngineConfig
    from components.inference.engine import build_engine
    calls = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained.__func__

        def wrapped(klass, name, *args, _real=real, **kwargs):
            calls.append((klass.__name__, kwargs.get("revision"), kwargs.get("trust_remote_code")))
            return _real(klass, name, *args, **kwargs)
        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))
    sha = "a09a35458c702b33eeacc393d103063234e8bc28"
    engine = build_engine(EngineConfig(backend="hf"), "float32", str(tiny_model_dir), revision=sha)
    assert engine.tokenizer is not None
    assert calls == [("AutoTokenizer", sha, False), ("AutoModelForCausalLM", sha, False)]
