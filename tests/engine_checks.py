"""Budget-forcing behaviour every engine must show; run on HF in-process and on vLLM in its venv.

Each ``check_*`` takes an engine built on the tiny untrained Qwen2 and asserts.
``python -m tests.engine_checks --engine vllm --model DIR`` runs them all and
prints a JSON verdict per check (used by tests/components/test_vllm_engine.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec
from components.inference.engine import Sampling

QUESTIONS = ["What is 12 + 34?", "What is the digit sum of 98765?", "Solve for x: x - 5 = 7. What is x?",
             "What is 4831 + 2967?", "In how many ways can one of 3 chess or 4 go players be picked?", "What is 1 + 1?"]


def prompts(engine, n=len(QUESTIONS)):
    return [thinking_prompt(engine.tokenizer, q) for q in QUESTIONS[:n]]


def stop_bias(engine, value):
    return Sampling(logit_bias={i: value for i in engine.vocab.stop_ids})


def check_budget_is_never_exceeded_and_reached_when_model_goes_on(engine):
    for budget in (1, 5, 17, 40):
        res = engine.generate_forced(prompts(engine), [BudgetSpec(max_thinking_tokens=budget)] * 6,
                                     stop_bias(engine, -100.0))
        assert all(r.thinking_tokens == budget and r.hit_budget for r in res), [r.thinking_tokens for r in res]
        free = engine.generate_forced(prompts(engine), [BudgetSpec(max_thinking_tokens=budget)] * 6)
        assert all(r.thinking_tokens <= budget for r in free)


def check_forced_answer_follows_delimiter_and_prefix(engine):
    spec = BudgetSpec(max_thinking_tokens=8, final_answer_prefix="Answer:", max_answer_tokens=6)
    r = engine.generate_forced(prompts(engine, 1), [spec], stop_bias(engine, -100.0))[0]
    v = engine.vocab
    assert tuple(r.token_ids[8:8 + len(v.delimiter_ids)]) == v.delimiter_ids
    assert r.answer.startswith("Answer:")


def check_exactly_k_waits_when_model_stops_early(engine):
    for k in (0, 1, 3):
        spec = BudgetSpec(max_thinking_tokens=200, num_waits=k, wait_strings=("Wait",))
        for r in engine.generate_forced(prompts(engine), [spec] * 6, stop_bias(engine, 100.0)):
            assert r.waits_used == k and r.thinking.count("Wait") == k and not r.hit_budget, (k, r.thinking)


def check_wait_strings_rotate_in_order(engine):
    spec = BudgetSpec(max_thinking_tokens=200, num_waits=4, wait_strings=("Wait", " Hmm", " Alternatively"))
    r = engine.generate_forced(prompts(engine, 1), [spec], stop_bias(engine, 100.0))[0]
    assert r.thinking == "Wait Hmm AlternativelyWait", r.thinking


def check_min_thinking_tokens_extends_with_waits(engine):
    spec = BudgetSpec(max_thinking_tokens=100, min_thinking_tokens=10, wait_strings=("Wait",))
    wait_len = len(engine.vocab.encode("Wait"))
    r = engine.generate_forced(prompts(engine, 1), [spec], stop_bias(engine, 100.0))[0]
    assert 10 <= r.thinking_tokens < 10 + wait_len and r.waits_used == -(-10 // wait_len)


def check_budget_counts_the_appended_wait_tokens(engine):
    spec = BudgetSpec(max_thinking_tokens=5, num_waits=50, wait_strings=("Wait, let me check again",))
    r = engine.generate_forced(prompts(engine, 1), [spec], stop_bias(engine, 100.0))[0]
    assert r.thinking_tokens == 5 and r.hit_budget


def check_answer_ends_with_im_end_or_its_cap(engine):
    v = engine.vocab
    for cap in (1, 4, 30):
        spec = BudgetSpec(max_thinking_tokens=6, max_answer_tokens=cap)
        for r in engine.generate_forced(prompts(engine), [spec] * 6):
            tail = r.token_ids[r.thinking_tokens + len(v.delimiter_ids):]
            assert r.answer_tokens <= cap and (v.end_id in tail or r.answer_tokens == cap)


def check_batch_equals_one_by_one_under_greedy(engine):
    specs = [BudgetSpec(max_thinking_tokens=b, num_waits=w, final_answer_prefix=p, max_answer_tokens=8)
             for b, w, p in [(3, 0, ""), (20, 2, "Answer:"), (9, 1, ""), (30, 0, "Answer:"), (1, 0, ""), (15, 3, "")]]
    ps = prompts(engine)
    batched = engine.generate_forced(ps, specs)
    single = [engine.generate_forced([p], [s])[0] for p, s in zip(ps, specs)]
    for b, s in zip(batched, single):
        assert (b.thinking, b.answer, b.waits_used, b.hit_budget) == (s.thinking, s.answer, s.waits_used, s.hit_budget)


def check_sampling_respects_budget_and_is_seeded(engine):
    spec = BudgetSpec(max_thinking_tokens=12, num_waits=1)
    s = Sampling(temperature=1.0, top_p=0.95, seed=3)
    a = engine.generate_forced(prompts(engine), [spec] * 6, s)
    b = engine.generate_forced(prompts(engine), [spec] * 6, s)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert all(r.thinking_tokens <= 12 for r in a)


def check_plain_generation_stops_and_caps(engine):
    v = engine.vocab
    out = engine.generate(prompts(engine, 2), Sampling(max_new_tokens=7, banned_token_ids=v.stop_ids))
    assert all(c.completion_tokens == 7 and c.finish_reason == "length" for c in out)
    out = engine.generate(prompts(engine, 2), Sampling(max_new_tokens=20, logit_bias={v.end_id: 100.0}))
    assert all(c.token_ids == [v.end_id] and c.finish_reason == "stop" for c in out)


CHECKS = {name: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def _async_check(model: str) -> str:
    import asyncio

    from components.inference.vllm_engine import AsyncVLLMEngine

    async def run():
        engine = AsyncVLLMEngine.from_pretrained(model, "float32", batch_size=8, unlimited_thinking_tokens=64)
        try:
            specs = [BudgetSpec(max_thinking_tokens=b, num_waits=w) for b, w in [(5, 0), (20, 2), (12, 1)]]
            res = await engine.generate_forced(prompts(engine, 3), specs, stop_bias(engine, 100.0))
            assert [r.waits_used for r in res] == [0, 2, 1], [r.waits_used for r in res]
            free = await engine.generate_forced(prompts(engine, 3), specs)
            assert all(r.thinking_tokens <= s.max_thinking_tokens for r, s in zip(free, specs))
            return free
        finally:
            engine.shutdown()

    try:
        asyncio.run(run())
        return "ok"
    except Exception:
        return traceback.format_exc()[-1500:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="vllm")
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    from components.inference.engines import build_engine
    engine = build_engine(args.engine, args.model, "float32", batch_size=8, unlimited_thinking_tokens=64)
    verdicts = {}
    for name, fn in CHECKS.items():
        try:
            fn(engine)
            verdicts[name] = "ok"
        except Exception:
            verdicts[name] = traceback.format_exc()[-1500:]
    if args.engine == "vllm":  # the async (serving) engine forces budgets and waits too
        del engine
        verdicts["check_async_engine_forces_budgets"] = _async_check(args.model)
    print("ENGINE_CHECKS " + json.dumps(verdicts), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
