"""The tokenize stage reads the base model's tokenizer at its pinned commit, never its code."""
import pytest

from components.config import ModelConfig
from components.paths import Paths

PIN = "0123456789abcdef0123456789abcdef01234567"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("source,revision", [("hub", PIN), ("embedded", None)])
def test_the_tokenizer_loads_at_the_pinned_revision(tiny_model_dir, tmp_path, monkeypatch, source, revision):
    import transformers

    from components.training.tokenize_stage import tokenize_stage
    seen = {}
    real = transformers.AutoTokenizer.from_pretrained

    def spy(ref, **kw):
        seen.update(ref=str(ref), **kw)
        real(ref, **kw)  # the real load, with exactly these arguments
        raise _Stop
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    paths = Paths.for_profile("tiny", tmp_path)
    if source == "embedded":
        paths.base_model.parent.mkdir(parents=True, exist_ok=True)
        paths.base_model.symlink_to(tiny_model_dir)
    model = ModelConfig(source=source, name=str(tiny_model_dir), revision=revision)
    with pytest.raises(_Stop):
        tokenize_stage(512, model, paths)
    assert seen == {"ref": str(tiny_model_dir if source == "hub" else paths.base_model), "revision": revision,
                    "trust_remote_code": False}
