"""The train stage reads the base model at its pinned commit: the memory plan's config, the fingerprint its
checkpoints live under, and the model and tokenizer train_sft loads (local and Ray launchers)."""
import pytest

from components.config import ModelConfig, SFTConfig
from components.paths import Paths

PIN = "0123456789abcdef0123456789abcdef01234567"


class _Stop(Exception):
    pass


def test_the_pinned_revision_reaches_every_load_of_the_base_model(tiny_model_dir, tmp_path, monkeypatch):
    """A hub-source model (here a local directory, which transformers reads whatever the revision): AutoConfig
    is called with the pin (the real call, through a spy), and train_sft gets it for load_model."""
    import transformers

    import components.training.sft as sft
    import components.training.train_stage as stage
    seen = {}
    real_config = transformers.AutoConfig.from_pretrained

    def config_spy(ref, **kw):
        seen["config"] = kw
        return real_config(ref, **kw)

    def train_spy(cfg, base, examples, out, work, dtype, **kw):
        seen["train_sft"] = kw
        raise _Stop
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config_spy)
    monkeypatch.setattr(sft, "train_sft", train_spy)
    paths = Paths.for_profile("tiny", tmp_path)
    paths.sft_tokens.parent.mkdir(parents=True)
    paths.sft_tokens.write_text('{"input_ids": [1, 2], "labels": [1, 2], "prompt_tokens": 0}\n')
    model = ModelConfig(source="hub", name=str(tiny_model_dir), revision=PIN)
    with pytest.raises(_Stop):
        stage.train_stage(SFTConfig(deepspeed="never"), model, paths)
    assert seen["config"] == {"revision": PIN, "trust_remote_code": False}
    assert seen["train_sft"]["revision"] == PIN

    launched = {}
    monkeypatch.setattr(stage, "train_with_ray", lambda *a, **kw: launched.update(kw) or (_ for _ in ()).throw(_Stop))
    with pytest.raises(_Stop):
        stage.train_stage(SFTConfig(deepspeed="never", launcher="ray"), model, paths)
    assert launched["revision"] == PIN


def test_train_sft_loads_the_base_model_at_its_revision(tiny_model_dir, tmp_path, monkeypatch):
    import components.training.sft as sft
    from components.formatting import TokenizedExample
    seen = {}

    def load_spy(path, dtype, attn=None, **kw):
        seen.update(kw)
        raise _Stop
    monkeypatch.setattr(sft, "load_model", load_spy)
    with pytest.raises(_Stop):
        sft.train_sft(SFTConfig(deepspeed="never"), tiny_model_dir, [TokenizedExample([1, 2], [1, 2], 0)],
                      tmp_path / "out", tmp_path / "work", revision=PIN)
    assert seen == {"revision": PIN}


def test_the_fingerprint_changes_with_the_base_models_revision(tmp_path):
    from components.training.train_stage import sft_fingerprint
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text('{"input_ids": [1, 2], "labels": [1, 2], "prompt_tokens": 0}\n')
    fp = lambda rev: sft_fingerprint(SFTConfig(), "Qwen/Qwen2.5-32B-Instruct", tokens, rev)  # noqa: E731
    assert fp(PIN) != fp("f" * 40) and fp(None) == sft_fingerprint(SFTConfig(), "Qwen/Qwen2.5-32B-Instruct", tokens)
