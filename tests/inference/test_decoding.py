"""The HF engine's decoding loop: finished rows leave the batch, outputs stay ``model.generate``'s."""
import copy
from collections import Counter

import pytest
import torch

from components.inference.budget_forcing import BudgetSpec
from components.inference.decoding import top_p_filter
from components.inference.engine import Sampling
from tests.support.engine_checks import prompts, widened


def _reference(engine, texts, max_new_tokens, stops):
    """transformers' own greedy ``generate`` on the same left-padded batch, cut after the first stop."""
    enc = engine._encode(texts)
    with torch.inference_mode():
        out = engine.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                    pad_token_id=engine.tokenizer.pad_token_id)
    rows = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), None)
        rows.append(row if end is None else row[:end + 1])
    return rows


@pytest.fixture
def count_batch_widths():
    """``count_batch_widths(engine)``: the batch size of every forward pass its model makes from then on (a
    forward pre-hook, so the model's own signature, ``logits_to_keep`` included, is what the loop sees)."""
    handles = []

    def start(engine) -> list[int]:
        widths: list[int] = []
        handles.append(engine.model.register_forward_pre_hook(
            lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True))
        return widths
    yield start
    for h in handles:
        h.remove()


@pytest.fixture
def lively_engine(tiny_engine):
    """The tiny model with weights drawn wide (seeded): greedy rows that differ, unlike the untrained model's
    one repeated token, so a stop token ends them at different steps."""
    return widened(tiny_engine, batch_size=8)


def test_greedy_equals_generate_while_rows_leave_the_batch(lively_engine, count_batch_widths):
    engine, texts = lively_engine, prompts(lively_engine)  # six prompts of different lengths: left padding
    free = _reference(engine, texts, 30, stops=[engine.vocab.end_id])
    # a token some rows emit, at different steps: as the stop token, rows finish apart and some run to the cap
    seen = Counter(t for row in free for t in set(row))
    stop = next(t for t, n in seen.most_common() if 1 < n < len(texts)
                and len({row.index(t) for row in free if t in row}) > 1)
    expected = _reference(engine, texts, 30, stops=[stop])
    batch_widths = count_batch_widths(engine)
    out = engine.generate(texts, Sampling(max_new_tokens=30, stop_token_ids=(stop,)))
    assert [c.token_ids for c in out] == expected
    assert [c.finish_reason for c in out] == ["stop" if r[-1] == stop else "length" for r in expected]
    assert batch_widths[0] == len(texts) and min(batch_widths) < len(texts)  # finished rows left
    assert batch_widths == sorted(batch_widths, reverse=True)


def test_forced_rows_leave_the_batch_when_their_answer_ends(tiny_engine, count_batch_widths):
    v, batch_widths = tiny_engine.vocab, count_batch_widths(tiny_engine)
    specs = [BudgetSpec(max_thinking_tokens=b, max_answer_tokens=4) for b in (2, 6, 12, 20, 30, 40)]
    out = tiny_engine.generate_forced(prompts(tiny_engine), specs, Sampling(logit_bias={i: -100.0 for i in v.stop_ids}))
    assert [r.thinking_tokens for r in out] == [2, 6, 12, 20, 30, 40]
    longest = 40 + len(v.delimiter_ids) + 4 + 1
    assert len(batch_widths) == longest  # prefill + one pass per generated token but the last
    assert batch_widths[0] == 6 and batch_widths[-1] == 1
    for r in out:  # each row's tokens end with its own end of turn: no padding after it
        assert r.token_ids[-1] == v.end_id and r.token_ids.count(v.end_id) == 1


def test_a_sampled_row_does_not_depend_on_its_batch(tiny_engine):
    s = Sampling(temperature=1.0, top_p=0.9, seed=5, max_new_tokens=12)
    texts = prompts(tiny_engine)
    together = tiny_engine.generate(texts, s)
    size = tiny_engine.batch_size
    try:
        tiny_engine.batch_size = 1
        alone = tiny_engine.generate(texts, s)
    finally:
        tiny_engine.batch_size = size
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    other_seed = tiny_engine.generate(texts, Sampling(temperature=1.0, top_p=0.9, seed=6, max_new_tokens=12))
    assert [c.token_ids for c in other_seed] != [c.token_ids for c in together]


def test_top_p_keeps_the_smallest_nucleus():
    scores = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = lambda p: (top_p_filter(scores.clone(), p) > float("-inf"))[0].tolist()  # noqa: E731
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.5) == [False, True, False, False]
    assert kept(0.79) == [False, True, False, True]
    assert kept(0.81) == [True, True, False, True]
    assert kept(0.01) == [False, True, False, False]  # the most likely token always stays


def test_rows_stay_in_the_batch_when_the_cache_cannot_shrink(lively_engine, count_batch_widths, monkeypatch):
    """Linear-attention / state-space caches have no batch selection: the model's own cache, every row kept."""
    from components.inference import decoding
    engine, texts = lively_engine, prompts(lively_engine)
    s = Sampling(max_new_tokens=20, stop_token_ids=tuple(range(0, 300, 7)))  # rows stop at different steps
    shrinking = [c.token_ids for c in engine.generate(texts, s)]
    monkeypatch.setattr(decoding, "shrinkable_cache", lambda model: None)
    widths = count_batch_widths(engine)
    assert [c.token_ids for c in engine.generate(texts, s)] == shrinking
    assert set(widths) == {len(texts)} and len({len(t) for t in shrinking}) > 1


def test_sampling_follows_the_distribution_and_never_draws_a_banned_token():
    from components.inference.decoding import sample
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = probs.log().expand(4000, 4).clone()
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    counts = torch.bincount(sample(scores, gens), minlength=4) / 4000
    assert counts[3] == 0 and torch.allclose(counts[:3], probs[:3], atol=0.03)


def test_forced_sampling_decides_stops_in_the_distribution_it_draws_from(tiny_engine):
    """A nucleus of one token is greedy decoding: the stop decision must read the same filtered distribution
    (read from the untempered one, stops would be drawn with the model's full stop probability)."""
    specs = [BudgetSpec(max_thinking_tokens=b, num_waits=w, max_answer_tokens=6, wait_strings=ws) for b, w, ws in
             [(8, 0, ("Wait",)), (16, 1, ("Wait",)), (24, 2, ("",)), (12, 1, ("",)), (30, 1, ("Wait",)), (5, 0, ("",))]]
    v = tiny_engine.vocab
    # stops likely but not certain (the untrained model's argmax varies); then <|im_start|> dominant, which the
    # answer phase bans: a nucleus of banned tokens must leave the model's next choice, not an empty distribution
    for lean in ({i: 2.0 for i in v.stop_ids}, {v.stop_ids[0]: 20.0}):
        greedy = tiny_engine.generate_forced(prompts(tiny_engine), specs, Sampling(logit_bias=lean))
        nucleus = tiny_engine.generate_forced(prompts(tiny_engine), specs,
                                              Sampling(temperature=1.0, top_p=1e-6, seed=3, logit_bias=lean))
        assert [r.token_ids for r in nucleus] == [r.token_ids for r in greedy]


def test_sampling_with_a_banned_nucleus_draws_from_the_rest(tiny_engine):
    """top_p 0.9 under a dominant <|im_start|>: thinking's empty-wait steps and the answer ban it; every token
    drawn must still be one the model gives probability (never the filler an all -inf row would yield)."""
    v = tiny_engine.vocab
    spec = BudgetSpec(max_thinking_tokens=10, num_waits=3, wait_strings=("",), max_answer_tokens=4)
    out = tiny_engine.generate_forced(prompts(tiny_engine), [spec] * 6,
                                      Sampling(temperature=1.0, top_p=0.9, seed=1, logit_bias={v.stop_ids[0]: 20.0}))
    filler = len(tiny_engine.tokenizer) - 1
    for r in out:
        assert r.token_ids.count(filler) < 3, r.token_ids
        assert r.token_ids[-1] == v.end_id


def test_generation_config_defaults_the_engine_does_not_apply_are_reported(tiny_engine):
    from components.inference.hf_engine import warn_unapplied_generation_defaults
    model = copy.deepcopy(tiny_engine.model)
    assert warn_unapplied_generation_defaults(model) == {}
    model.generation_config.repetition_penalty = 1.05  # as Qwen2.5-Instruct ships it
    assert warn_unapplied_generation_defaults(model) == {"repetition_penalty": 1.05}
