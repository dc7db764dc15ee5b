import pytest

from components.inference.rebase import (
    QwenMathPRM,
    RebaseSpec,
    allocate,
    build_reward,
    rebase,
    register_reward,
    release_reward,
)

Q = "What is 958 + 67?"


class ShortLines:
    """A process reward that prefers short lines (any callable reward fits REBASE)."""

    name = "test-short-lines"

    def score(self, question, steps):
        return 1.0 / (1 + sum(len(s) for s in steps))


def test_allocation_follows_reward_softmax_and_spends_the_budget():
    assert sum(allocate([0.1, 0.9, 0.5], 7, 0.2)) == 7
    hi_first = allocate([0.0, 1.0], 10, 0.2)
    assert hi_first[1] > hi_first[0]
    assert allocate([0.3, 0.3], 4, 1.0) == [2, 2]
    assert allocate([0.5], 0, 1.0) == [0]


def test_a_registered_reward_is_built_by_its_name():
    reward = ShortLines()
    register_reward(reward)
    assert build_reward("test-short-lines") is reward


def test_rebase_returns_one_voted_result_per_question(tiny_engine):
    spec = RebaseSpec(width=2, max_step_tokens=8, max_thinking_tokens=16, max_answer_tokens=4)
    out = rebase(tiny_engine, [Q, "What is 12 + 30?"], spec, ShortLines())
    assert len(out) == 2
    for r in out:
        assert r.tries == 2 and r.thinking_tokens > 0


def _recording(monkeypatch, cls, calls):
    """Wrap ``cls.from_pretrained`` so each real call's name and keyword arguments are kept."""
    real = cls.from_pretrained.__func__

    def wrapped(klass, name, *args, **kwargs):
        calls.append((cls.__name__, name, kwargs.get("revision"), kwargs.get("trust_remote_code")))
        return real(klass, name, *args, **kwargs)
    monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))


@pytest.fixture
def qwen_named_prm(tmp_path):
    """A local PRM in Qwen2.5-Math-PRM's shape (its own modeling file) whose name carries 'Qwen' and 'Math-PRM'."""
    from infra.rehearsal.prm import make_prm
    from tests.conftest import REPO
    return str(make_prm(REPO / "releases/tiny-base", tmp_path / "Qwen2.5-Math-PRM-7B"))


def test_a_qwen_math_prm_name_alone_never_runs_the_models_code(qwen_named_prm, monkeypatch):
    import transformers
    calls = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModel, transformers.AutoModelForSequenceClassification):
        _recording(monkeypatch, cls, calls)
    try:
        with pytest.raises(ValueError, match="trust_remote_code"):  # its code is needed: refused, not run
            build_reward(qwen_named_prm)
        assert calls and all(trust is False for *_, trust in calls)
        with pytest.raises(ValueError, match="trust_remote_code"):  # the recipe alone does not trust it either
            build_reward(qwen_named_prm, recipe="qwen_math_prm")
    finally:
        release_reward(qwen_named_prm)


def test_an_allow_listed_prm_loads_at_its_revision_with_its_code(qwen_named_prm, monkeypatch):
    import transformers

    from components.config import EvaluateConfig
    sha = "0610740060112df12585d00a1c5f4624d2f59051"
    cfg = EvaluateConfig(methods={"rebase": {"reward": qwen_named_prm, "reward_revision": sha,
                                             "reward_recipe": "qwen_math_prm"}},
                         trust_remote_code=[qwen_named_prm])
    calls = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModel):
        _recording(monkeypatch, cls, calls)
    try:
        from components.evaluation.sweep import method
        reward = method(cfg, "rebase").reward()
        assert isinstance(reward, QwenMathPRM)
        assert {(c, rev, trust) for c, _, rev, trust in calls} == {("AutoTokenizer", sha, True), ("AutoModel", sha, True)}
    finally:
        release_reward(qwen_named_prm)


def test_the_qwen_math_prm_recipe_needs_the_name_allow_listed():
    from components.config import EvaluateConfig
    from components.inference.methods.registry import section_problems
    ev = {"methods": {"rebase": {"reward": "Qwen/Qwen2.5-Math-PRM-7B", "reward_recipe": "qwen_math_prm"}}}
    [problem] = section_problems(EvaluateConfig(**ev))
    assert problem.startswith("evaluate.trust_remote_code: evaluate.methods.rebase.reward_recipe qwen_math_prm runs")
    assert section_problems(EvaluateConfig(**ev, trust_remote_code=["Qwen/Qwen2.5-Math-PRM-7B"])) == []
