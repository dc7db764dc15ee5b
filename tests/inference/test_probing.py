"""Answer probing on the HF engine: the KV-forking fast path equals the engine-agnostic chunked path, the
chunked path makes budget forcing's decisions, and the probing methods' rules and refusals. (What every engine
must do with probes is in the engine checks: tests/support/engine_checks.py.)"""
import types
from collections import Counter

import pytest

from components.inference.budget_forcing import BudgetSpec, Probe
from components.inference.engine import Sampling
from components.inference.methods.base import Forcing, MethodRefused
from components.inference.methods.registry import build
from components.inference.probing import ProbeSpec, generate_probed, probed_by_chunks
from tests.support.engine_checks import STOP_PULL, prompts, stop_bias, widened


@pytest.fixture(scope="module")
def lively_engine(tiny_engine):
    """The tiny model with weights drawn wide (seeded): rows whose thinking and trial answers differ."""
    return widened(tiny_engine, batch_size=4, unlimited_thinking_tokens=64)


def probe_view(r):
    return [(p.thinking_tokens, p.answer, p.tokens) for p in r.probes]


def frequent_token_text(engine):
    """The text of a token the lively model's thinking emits often (a transition it reaches)."""
    runs = engine.generate_forced(prompts(engine), [BudgetSpec(max_thinking_tokens=40)] * 6)
    token, _ = Counter(t for r in runs for t in r.token_ids[:r.thinking_tokens]).most_common(1)[0]
    return engine.tokenizer.decode([token])


@pytest.mark.parametrize("where", ["every", "at"])
def test_the_hf_fast_path_equals_the_chunked_path_token_for_token(lively_engine, where):
    """Greedy probing forking the KV cache inside the decoding loop gives what re-prefilling the prompt and the
    thinking for every chunk and probe gives: thinking, probes, exits, answers (some rows exit, some do not)."""
    engine = lively_engine
    probe = (ProbeSpec(every=7, answer_tokens=4, answer_prefix="Answer:") if where == "every" else
             ProbeSpec(at=(frequent_token_text(engine),), answer_tokens=4, answer_prefix="Answer:"))
    spec = BudgetSpec(max_thinking_tokens=40, final_answer_prefix="Answer:", max_answer_tokens=6)
    sampling = stop_bias(engine, STOP_PULL)

    def rule(probes):
        return len(probes) >= 3

    fast = generate_probed(engine, prompts(engine), [spec] * 6, probe, rule, sampling)
    chunked = probed_by_chunks(engine, prompts(engine), [spec] * 6, probe, rule, sampling)
    assert [r.token_ids for r in fast] == [r.token_ids for r in chunked]
    assert [probe_view(r) for r in fast] == [probe_view(r) for r in chunked]
    assert [(r.exited, r.hit_budget, r.probe_tokens) for r in fast] == \
        [(r.exited, r.hit_budget, r.probe_tokens) for r in chunked]
    for f, c in zip(fast, chunked):
        assert [p.mean_prob for p in f.probes] == pytest.approx([p.mean_prob for p in c.probes], abs=1e-4)
    assert any(r.exited for r in fast)
    assert len({r.thinking_tokens for r in fast}) > 1  # rows exit (or end) at different points


def test_the_fast_path_feeds_only_the_probes_own_tokens(lively_engine):
    """After the prompt's prefill, no forward pass feeds more than a probe's head (the row's last token, the
    delimiter and the prefix): the prompt and the thinking are never recomputed for a probe."""
    engine = lively_engine
    probe = ProbeSpec(every=5, answer_tokens=3, answer_prefix="Answer:")
    head = 1 + len(engine.vocab.delimiter_ids) + len(engine.vocab.encode("Answer:"))
    widths = []
    hook = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        res = generate_probed(engine, prompts(engine, 4), [BudgetSpec(max_thinking_tokens=30)] * 4, probe,
                              lambda probes: False)
    finally:
        hook.remove()
    taken = sum(len(r.probes) for r in res)
    assert taken > 4 and 0 < widths.count(head) <= taken  # rows probed at the same step share a fork's forward
    assert max(widths[1:]) == head, widths[:3]


def test_the_chunked_path_chooses_again_past_a_never_generated_token(tiny_engine):
    """With ``<|endoftext|>`` the greedy choice at every step, budget forcing takes the best token that is
    neither it nor a stop; the chunked path, stopping at it, chooses that step again with both banned."""
    v = tiny_engine.vocab
    sampling = Sampling(logit_bias={v.banned_ids[0]: 50.0})
    spec = BudgetSpec(max_thinking_tokens=9, final_answer_prefix="Answer:", max_answer_tokens=4)
    chunked = probed_by_chunks(tiny_engine, prompts(tiny_engine, 3), [spec] * 3,
                               ProbeSpec(every=4, answer_tokens=2), lambda probes: False, sampling)
    forced = tiny_engine.generate_forced(prompts(tiny_engine, 3), [spec] * 3, sampling)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in forced]
    assert all(r.thinking_tokens == 9 and len(r.probes) == 2 for r in chunked)


def test_sampled_probing_is_seeded_and_keeps_the_budget(tiny_engine):
    s = Sampling(temperature=1.0, top_p=0.95, seed=3)
    spec, probe = BudgetSpec(max_thinking_tokens=12), ProbeSpec(every=4, answer_tokens=2)
    for run in (generate_probed, probed_by_chunks):
        a = run(tiny_engine, prompts(tiny_engine), [spec] * 6, probe, lambda probes: False, s)
        b = run(tiny_engine, prompts(tiny_engine), [spec] * 6, probe, lambda probes: False, s)
        assert [r.token_ids for r in a] == [r.token_ids for r in b]
        assert all(r.thinking_tokens <= 12 for r in a)


def test_probing_refuses_forced_waits_and_a_minimum(tiny_engine):
    for spec, name in ((BudgetSpec(num_waits=1), "num_waits"), (BudgetSpec(min_thinking_tokens=3), "min_thinking")):
        with pytest.raises(ValueError, match=name):
            generate_probed(tiny_engine, prompts(tiny_engine, 1), [spec], ProbeSpec(every=4), lambda probes: False)


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "every"), (dict(every=0), "every"), (dict(at=("",)), "at"), (dict(every=4, answer_tokens=0),
                                                                         "answer_tokens")])
def test_bad_probe_specs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProbeSpec(**kwargs)


def probes(*answers, prob=0.5):
    return [Probe(thinking_tokens=4 * (i + 1), answer=a, mean_prob=prob, tokens=5) for i, a in enumerate(answers)]


def test_early_exit_stops_when_the_last_agree_probes_give_one_answer():
    equivalent = build("early_exit", Forcing(), {"agree": 2}, [64])
    assert equivalent.stop(probes("Answer: 1/2", "Answer: 0.5"))
    assert not equivalent.stop(probes("Answer: 0.5", "Answer: 3"))
    assert not equivalent.stop(probes("Answer: 0.5"))
    assert not equivalent.stop(probes("Answer:", "Answer:"))  # no answer yet is no agreement
    strings = build("early_exit", Forcing(), {"agree": 3, "compare": "string"}, [64])
    assert strings.stop(probes("Answer: 7", "Answer: 12", "answer: 12.", "Answer:  12"))
    assert not strings.stop(probes("Answer: 1/2", "Answer: 0.5", "Answer: 0.5"))


def test_confidence_exit_stops_once_a_trial_answer_is_confident_enough():
    method = build("confidence_exit", Forcing(), {"threshold": 0.8}, [64])
    assert not method.stop(probes("Answer: 3", prob=0.79)) and method.stop(probes("Answer: 3", prob=0.8))
    assert build("confidence_exit", Forcing(), {"threshold": 0}, [64]).stop(probes("Answer:", prob=0.0))
    with pytest.raises(ValueError, match="confidence_exit.transitions"):
        build("confidence_exit", Forcing(), {"transitions": []}, [64])


def test_the_probing_methods_run_with_the_shared_forcing_and_their_own_settings(tiny_engine):
    method = build("early_exit", Forcing(final_answer_prefix="Answer:", max_answer_tokens=5),
                   {"probe_every": 6, "agree": 2, "answer_tokens": 3}, [20, 40])
    assert method.values() == [20, 40]
    res = method.run(tiny_engine, ["What is 1 + 1?", "What is 2 + 2?"], 40)
    assert all(r.exited and r.thinking_tokens == 12 and len(r.probes) == 2 for r in res), res  # one repeated token
    assert all(r.answer.startswith("Answer:") and r.compute_tokens == 12 + r.probe_tokens for r in res)


class _NoDelimiterTokenizer:
    unk_token_id = 0

    def convert_tokens_to_ids(self, token):
        return 0


def test_the_probing_methods_are_refused_where_probing_has_no_meaning(tiny_engine):
    base = types.SimpleNamespace(tokenizer=_NoDelimiterTokenizer(), vocab=types.SimpleNamespace(delimiter_ids=()))
    for name in ("early_exit", "confidence_exit"):
        with pytest.raises(MethodRefused, match=f"evaluate.methods.{name}: .*no end-of-thinking delimiter"):
            build(name, Forcing(), {}, [64]).check(base)
        silent = types.SimpleNamespace(tokenizer=tiny_engine.tokenizer, vocab=types.SimpleNamespace(
            delimiter_ids=tiny_engine.vocab.delimiter_ids, encode=lambda text: ()))
        with pytest.raises(MethodRefused, match="evaluate.final_answer_prefix"):
            build(name, Forcing(final_answer_prefix="Answer:"), {}, [64]).check(silent)
        with pytest.raises(MethodRefused, match="evaluate.num_waits"):
            build(name, Forcing(num_waits=2), {}, [64]).check(tiny_engine)
        build(name, Forcing(), {}, [64]).check(tiny_engine)  # the thinking format: accepted
    unknown = _UnknownSnowman(tiny_engine.tokenizer)
    with pytest.raises(MethodRefused, match="confidence_exit.transitions: '☃' is never emitted"):
        build("confidence_exit", Forcing(), {"transitions": ["☃"]}, [64]).check(
            types.SimpleNamespace(tokenizer=unknown, vocab=tiny_engine.vocab))


class _UnknownSnowman:
    """A tokenizer that knows no snowman (it encodes to the unknown token; no token's text ends with it)."""

    def __init__(self, tokenizer):
        self.inner, self.unk_token_id = tokenizer, tokenizer.unk_token_id

    def __call__(self, text, **kw):
        return {"input_ids": [self.unk_token_id]} if text == "☃" else self.inner(text, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)
