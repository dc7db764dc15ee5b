"""Budget forcing on a real (tiny, untrained) Qwen2 through HF generate."""
import pytest

from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec
from components.inference.engine import Sampling

QUESTIONS = ["What is 12 + 34?", "What is the digit sum of 98765?", "Solve for x: x - 5 = 7. What is x?",
             "What is 4831 + 2967?", "In how many ways can one of 3 chess or 4 go players be picked?", "What is 1 + 1?"]


def _prompts(engine, n=len(QUESTIONS)):
    return [thinking_prompt(engine.tokenizer, q) for q in QUESTIONS[:n]]


def _stop_bias(engine, value):
    v = engine.vocab
    return Sampling(logit_bias={i: value for i in v.stop_ids})


@pytest.mark.parametrize("budget", [1, 5, 17, 40])
def test_thinking_never_exceeds_budget_and_hits_it_when_model_goes_on(tiny_engine, budget):
    never_stop = _stop_bias(tiny_engine, -1e4)
    res = tiny_engine.generate_forced(_prompts(tiny_engine), [BudgetSpec(max_thinking_tokens=budget)] * 6, never_stop)
    for r in res:
        assert r.thinking_tokens == budget and r.hit_budget
    free = tiny_engine.generate_forced(_prompts(tiny_engine), [BudgetSpec(max_thinking_tokens=budget)] * 6)
    assert all(r.thinking_tokens <= budget for r in free)


def test_forced_answer_starts_with_delimiter_and_prefix(tiny_engine):
    never_stop = _stop_bias(tiny_engine, -1e4)
    spec = BudgetSpec(max_thinking_tokens=8, final_answer_prefix="Answer:", max_answer_tokens=6)
    r = tiny_engine.generate_forced(_prompts(tiny_engine, 1), [spec], never_stop)[0]
    v = tiny_engine.vocab
    after = r.token_ids[8:8 + len(v.delimiter_ids)]
    assert tuple(after) == v.delimiter_ids
    assert r.answer.startswith("Answer:")
    decoded = tiny_engine.tokenizer.decode(r.token_ids)
    assert "<|im_start|>answer\nAnswer:" in decoded


@pytest.mark.parametrize("k", [0, 1, 3])
def test_exactly_k_waits_when_model_stops_early(tiny_engine, k):
    always_stop = _stop_bias(tiny_engine, 1e4)
    spec = BudgetSpec(max_thinking_tokens=200, num_waits=k, wait_strings=("Wait",))
    for r in tiny_engine.generate_forced(_prompts(tiny_engine), [spec] * 6, always_stop):
        assert r.waits_used == k
        assert r.thinking.count("Wait") == k
        assert not r.hit_budget


def test_wait_strings_rotate_in_order(tiny_engine):
    always_stop = _stop_bias(tiny_engine, 1e4)
    spec = BudgetSpec(max_thinking_tokens=200, num_waits=4, wait_strings=("Wait", " Hmm", " Alternatively"))
    r = tiny_engine.generate_forced(_prompts(tiny_engine, 1), [spec], always_stop)[0]
    assert r.thinking == "Wait Hmm AlternativelyWait"


def test_min_thinking_tokens_extends_with_waits(tiny_engine):
    always_stop = _stop_bias(tiny_engine, 1e4)
    spec = BudgetSpec(max_thinking_tokens=100, min_thinking_tokens=10, wait_strings=("Wait",))
    wait_len = len(tiny_engine.vocab.encode("Wait"))
    r = tiny_engine.generate_forced(_prompts(tiny_engine, 1), [spec], always_stop)[0]
    assert 10 <= r.thinking_tokens < 10 + wait_len
    assert r.waits_used == -(-10 // wait_len)


def test_budget_counts_the_appended_wait_tokens(tiny_engine):
    always_stop = _stop_bias(tiny_engine, 1e4)
    spec = BudgetSpec(max_thinking_tokens=5, num_waits=50, wait_strings=("Wait, let me check again",))
    r = tiny_engine.generate_forced(_prompts(tiny_engine, 1), [spec], always_stop)[0]
    assert r.thinking_tokens == 5 and r.hit_budget


def test_answer_ends_with_im_end_or_its_cap(tiny_engine):
    v = tiny_engine.vocab
    for cap in (1, 4, 30):
        spec = BudgetSpec(max_thinking_tokens=6, max_answer_tokens=cap)
        for r in tiny_engine.generate_forced(_prompts(tiny_engine), [spec] * 6):
            assert r.answer_tokens <= cap
            tail = r.token_ids[r.thinking_tokens + len(v.delimiter_ids):]
            assert v.end_id in tail or r.answer_tokens == cap


def test_batch_equals_one_by_one_under_greedy(tiny_engine):
    specs = [BudgetSpec(max_thinking_tokens=b, num_waits=w, final_answer_prefix=p, max_answer_tokens=8)
             for b, w, p in [(3, 0, ""), (20, 2, "Answer:"), (9, 1, ""), (30, 0, "Answer:"), (1, 0, ""), (15, 3, "")]]
    prompts = _prompts(tiny_engine)
    batched = tiny_engine.generate_forced(prompts, specs)
    single = [tiny_engine.generate_forced([p], [s])[0] for p, s in zip(prompts, specs)]
    for b, s in zip(batched, single):
        assert (b.thinking, b.answer, b.waits_used, b.hit_budget) == (s.thinking, s.answer, s.waits_used, s.hit_budget)


def test_sampling_respects_budget_and_is_seeded(tiny_engine):
    spec = BudgetSpec(max_thinking_tokens=12, num_waits=1)
    s = Sampling(temperature=1.0, top_p=0.95, seed=3)
    a = tiny_engine.generate_forced(_prompts(tiny_engine), [spec] * 6, s)
    b = tiny_engine.generate_forced(_prompts(tiny_engine), [spec] * 6, s)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert all(r.thinking_tokens <= 12 for r in a)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_thinking_tokens=-1), "max_thinking_tokens"),
    (dict(max_thinking_tokens=4, min_thinking_tokens=8), "min_thinking_tokens"),
    (dict(wait_strings=()), "wait_strings"),
    (dict(max_answer_tokens=0), "max_answer_tokens"),
])
def test_bad_specs_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BudgetSpec(**kwargs)
