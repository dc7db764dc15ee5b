"""The engine protocol's conformance checks: every engine (HF, vLLM offline, vLLM async) must pass them.

Each ``check_*`` takes an engine built on the tiny untrained Qwen2 and asserts
(budget-forcing guarantees, the ``on_token`` callback, plain generation).
``python -m tests.support.engine_checks --engine vllm --model DIR`` runs them all on the
offline vLLM engine and then on the async one (through :class:`SyncFacade`) and
prints a JSON verdict per engine and check (used by tests/inference/test_vllm_engine.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback

from components.config import EngineConfig
from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec, Phase
from components.inference.engine import Sampling, build_engine

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


def check_empty_wait_string_suppresses_the_delimiter_and_appends_nothing(engine):
    """s1's "no string" ablation: each wait only bans the end of thinking for one step (the model's own token)."""
    v = engine.vocab
    ps = prompts(engine, 3)
    for k in (1, 3):
        res = engine.generate_forced(ps, [BudgetSpec(max_thinking_tokens=200, num_waits=k, wait_strings=("",))] * 3,
                                     stop_bias(engine, 100.0))
        own = engine.generate(ps, Sampling(max_new_tokens=k, logit_bias={i: 100.0 for i in v.stop_ids},
                                           banned_token_ids=v.stop_ids + v.banned_ids))
        for r, o in zip(res, own):
            assert r.thinking_tokens == k and r.waits_used == k and not r.hit_budget, (k, r)
            assert r.token_ids[:k] == o.token_ids, (r.token_ids[:k], o.token_ids)  # what the model picks, unforced
    spec = BudgetSpec(max_thinking_tokens=200, num_waits=4, wait_strings=("", "Wait"))
    r = engine.generate_forced(ps[:1], [spec], stop_bias(engine, 100.0))[0]
    assert r.waits_used == 4 and r.thinking.count("Wait") == 2, r.thinking
    assert r.thinking_tokens == 2 + 2 * len(v.encode("Wait"))
    spec = BudgetSpec(max_thinking_tokens=100, min_thinking_tokens=10, wait_strings=("",))
    r = engine.generate_forced(ps[:1], [spec], stop_bias(engine, 100.0))[0]
    assert r.thinking_tokens == 10 and r.waits_used == 10, r


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


def check_a_sampled_row_draws_with_its_own_seed_wherever_it_sits(engine):
    spec = BudgetSpec(max_thinking_tokens=12, num_waits=1)
    ps = prompts(engine)
    batch = engine.generate_forced([ps[0], ps[1], ps[0]], [spec] * 3, Sampling(temperature=1.0, top_p=0.95),
                                   seeds=[7, 9, 7])
    alone = engine.generate_forced([ps[0]], [spec], Sampling(temperature=1.0, top_p=0.95, seed=7))
    assert batch[0].token_ids == batch[2].token_ids == alone[0].token_ids
    other = engine.generate_forced([ps[0]], [spec], Sampling(temperature=1.0, top_p=0.95, seed=8))
    assert other[0].token_ids != alone[0].token_ids


def check_plain_generation_stops_and_caps(engine):
    v = engine.vocab
    out = engine.generate(prompts(engine, 2), Sampling(max_new_tokens=7, banned_token_ids=v.stop_ids))
    assert all(c.completion_tokens == 7 and c.finish_reason == "length" for c in out)
    out = engine.generate(prompts(engine, 2), Sampling(max_new_tokens=20, logit_bias={v.end_id: 100.0}))
    assert all(c.token_ids == [v.end_id] and c.finish_reason == "stop" for c in out)


def check_on_token_reports_every_token_with_its_phase(engine):
    v = engine.vocab
    specs = [BudgetSpec(max_thinking_tokens=b, num_waits=w, final_answer_prefix=p, max_answer_tokens=a)
             for b, w, p, a in [(6, 0, "Answer:", 5), (20, 2, "", 3), (3, 0, "", 1), (12, 1, "Answer:", 8)]]
    for sampling in (Sampling(), stop_bias(engine, 100.0), stop_bias(engine, -100.0)):
        seen: dict[int, list] = {}

        def record(i, t, ph, _seen=seen):
            _seen.setdefault(i, []).append((t, ph))

        res = engine.generate_forced(prompts(engine, 4), specs, sampling, on_token=record)
        assert sorted(seen) == [0, 1, 2, 3], sorted(seen)
        for i, r in enumerate(res):
            live = [(t, ph) for t, ph in seen[i] if ph is not Phase.DONE]
            assert [t for t, _ in live] == r.token_ids[:len(live)], (i, live, r.token_ids)
            assert [t for t, ph in live if ph is Phase.THINKING] == r.token_ids[:r.thinking_tokens]
            assert tuple(t for t, ph in live if ph is Phase.DELIMITER) == v.delimiter_ids
            answer = [t for t, ph in live if ph is Phase.ANSWER]
            assert answer[-1] == v.end_id, answer  # the closing <|im_end|> is reported too
            assert engine.tokenizer.decode([t for t in answer[:-1] if t not in v.banned_ids]) == r.answer


# The untrained model never ends thinking by itself; this pull towards the stop tokens makes it end at
# different points per question (tests/inference/test_budget_sweep.py checks it does), so a sweep's
# budgets cut some rows and not others.
STOP_PULL = 0.8
SWEEP_BUDGETS = (0, 8, 40, 50, 64, None)


def reported(r):
    return (r.thinking, r.answer, r.thinking_tokens, r.answer_tokens, r.waits_used, r.hit_budget)


def check_budget_sweep_equals_one_run_per_budget(engine):
    """Budgets from one capped thinking run (evaluation's sweep) give what one forced run per budget gives."""
    from components.inference.budget_sweep import budget_sweep
    spec = BudgetSpec(final_answer_prefix="Answer:", max_answer_tokens=6)
    sampling = stop_bias(engine, STOP_PULL)
    shared = budget_sweep(engine, prompts(engine), SWEEP_BUDGETS, spec, sampling)
    for b in SWEEP_BUDGETS:
        alone = engine.generate_forced(prompts(engine), [dataclasses.replace(spec, max_thinking_tokens=b)] * 6,
                                       sampling)
        assert [reported(r) for r in shared[b]] == [reported(r) for r in alone], b


def check_token_id_prompts_generate_as_their_text(engine):
    ps = prompts(engine)
    ids = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in ps]
    sampling = Sampling(max_new_tokens=12)
    assert [c.token_ids for c in engine.generate(ids, sampling)] == [c.token_ids for c in engine.generate(ps, sampling)]


def check_plain_generation_reports_each_tokens_logprob(engine):
    v = engine.vocab
    out = engine.generate(prompts(engine, 3), Sampling(max_new_tokens=9, banned_token_ids=v.stop_ids))
    for c in out:
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens, c
        assert all(lp <= 1e-6 for lp in c.logprobs), c.logprobs
    sure = engine.generate(prompts(engine, 2), Sampling(max_new_tokens=5, logit_bias={v.end_id: 100.0}))
    assert all(c.token_ids == [v.end_id] and c.logprobs[0] > -1e-3 for c in sure), [c.logprobs for c in sure]


def probing_method(name, **settings):
    from components.inference.methods.base import Forcing
    from components.inference.methods.registry import build
    return build(name, Forcing(final_answer_prefix="Answer:", max_answer_tokens=6), settings, [40])


def first_stop(method, probes):
    """The index of the first probe at which ``method``'s stop rule fires on the probes so far, or None."""
    return next((i for i in range(len(probes)) if method.stop(probes[:i + 1])), None)


def check_early_exit_stops_at_the_first_point_its_probes_agree(engine):
    v = engine.vocab
    for every, agree in ((4, 2), (5, 3), (40, 2)):
        method = probing_method("early_exit", probe_every=every, agree=agree, answer_tokens=3, compare="string")
        method.check(engine)
        head = len(v.delimiter_ids) + len(v.encode("Answer:"))
        for r in method.run(engine, QUESTIONS, 40):
            assert [p.thinking_tokens for p in r.probes] == list(range(every, every * len(r.probes) + 1, every))
            assert all(head < p.tokens <= head + 3 for p in r.probes), r.probes
            assert r.probe_tokens == sum(p.tokens for p in r.probes) and r.compute_tokens > r.thinking_tokens or \
                not r.probes
            stop = first_stop(method, r.probes)
            if stop is None:  # never agreed: the budget ended thinking
                assert r.thinking_tokens == 40 and r.hit_budget and not r.exited, r
            else:  # exited at the first agreement: no probe after it, the answer forced there
                assert stop == len(r.probes) - 1 and r.exited and not r.hit_budget, (every, agree, r.probes)
                assert r.thinking_tokens == r.probes[stop].thinking_tokens
                assert tuple(r.token_ids[r.thinking_tokens:r.thinking_tokens + head]) == \
                    v.delimiter_ids + v.encode("Answer:")


def check_probed_thinking_never_exceeds_the_budget_and_counts_its_probes(engine):
    from components.inference.probing import ProbeSpec, generate_probed
    spec_probe = ProbeSpec(every=3, answer_tokens=2, answer_prefix="Answer:")
    for budget in (0, 1, 5, 17):
        for sampling in (stop_bias(engine, -100.0), stop_bias(engine, STOP_PULL)):
            res = generate_probed(engine, prompts(engine), [BudgetSpec(max_thinking_tokens=budget)] * 6, spec_probe,
                                  lambda probes: False, sampling)
            for r in res:
                assert r.thinking_tokens <= budget and not r.exited, (budget, r)
                assert all(p.thinking_tokens < budget and p.thinking_tokens % 3 == 0 for p in r.probes)
                assert len(r.probes) == (r.thinking_tokens - (r.hit_budget and r.thinking_tokens > 0)) // 3
                assert r.compute_tokens == r.thinking_tokens + sum(p.tokens for p in r.probes)


def transition_of(engine):
    """A transition string the untrained model emits: the text of its first greedy thinking token."""
    first = engine.generate(prompts(engine, 1), Sampling(max_new_tokens=1))[0].token_ids[0]
    return engine.tokenizer.decode([first])


def check_confidence_exit_at_threshold_zero_exits_at_the_first_transition(engine):
    from components.inference.probing import Transitions
    text = transition_of(engine)
    method = probing_method("confidence_exit", threshold=0.0, transitions=[text], answer_tokens=3)
    method.check(engine)
    alone = engine.generate_forced(prompts(engine), [BudgetSpec(max_thinking_tokens=40)] * 6)
    marks = Transitions(engine.tokenizer, [text])
    for r, a in zip(method.run(engine, QUESTIONS, 40), alone):
        first = next((n for n in range(1, 40) if marks.ends(a.token_ids[:n])), None)
        assert first is not None, a.thinking
        assert r.exited and r.thinking_tokens == first and len(r.probes) == 1, (first, r)
        assert r.token_ids[:first] == a.token_ids[:first]


def check_confidence_exit_above_one_is_budget_forcing_with_probes(engine):
    from components.inference.probing import ProbeSpec, generate_probed
    text = transition_of(engine)
    probe = ProbeSpec(at=(text,), every=7, answer_tokens=3, answer_prefix="Answer:")
    sampling = stop_bias(engine, STOP_PULL)
    for budget in (6, 40):
        spec = BudgetSpec(max_thinking_tokens=budget, final_answer_prefix="Answer:", max_answer_tokens=6)
        probed = generate_probed(engine, prompts(engine), [spec] * 6, probe,
                                 lambda probes: probes[-1].mean_prob >= 1.5, sampling)
        forced = engine.generate_forced(prompts(engine), [spec] * 6, sampling)
        assert [reported(r) for r in probed] == [reported(r) for r in forced], budget
        assert [r.token_ids for r in probed] == [r.token_ids for r in forced], budget
        assert any(r.probes for r in probed) and all(0 < p.mean_prob <= 1 for r in probed for p in r.probes)


class Biased:
    """An engine whose forced calls carry a logit bias on the stop tokens: a model that always wants to end
    thinking (value > 0) or never does (value < 0), for methods that build their own sampling."""

    def __init__(self, engine, value: float):
        self.engine, self.bias = engine, {i: value for i in engine.vocab.stop_ids}

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate_forced(self, prompts, specs, sampling, progress=None, **kw):
        sampling = dataclasses.replace(sampling, logit_bias={**sampling.logit_bias, **self.bias})
        return self.engine.generate_forced(prompts, specs, sampling, progress, **kw)


def check_scheduled_waits_think_slowly_up_to_the_moment_then_end(engine):
    from components.inference.methods.base import Forcing
    from components.inference.methods.registry import build
    forcing = Forcing(max_answer_tokens=4)
    method = build("scheduled_waits", forcing, {"alpha": 1.5}, budgets=[8])
    for r in method.run(Biased(engine, 100.0), QUESTIONS, 8):  # every stop before the moment becomes a wait
        assert r.thinking_tokens == 12 and r.hit_budget and r.waits_used >= 1, r
        assert r.thinking.count("Wait") == r.waits_used
    once = build("scheduled_waits", forcing, {"alpha": 4.0, "max_waits": 1}, budgets=[8])
    for r in once.run(Biased(engine, 100.0), QUESTIONS, 8):  # after the last wait, the next stop ends thinking
        assert r.waits_used == 1 and r.thinking_tokens < 32 and not r.hit_budget, r


CHECKS = {name: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


class SyncFacade:
    """The async engine's coroutines as plain calls (its loop runs in a thread), so the checks apply as is."""

    def __init__(self, factory):
        import asyncio
        import threading
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.engine = self._run(factory())
        self.tokenizer, self.vocab, self.name = self.engine.tokenizer, self.engine.vocab, self.engine.name
        self.batch_size, self.unlimited = self.engine.batch_size, self.engine.unlimited

    @property
    def context_length(self):
        return self.engine.context_length

    def _run(self, coro):
        import asyncio
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def generate(self, *a, **kw):
        return self._run(self.engine.generate(*a, **kw))

    def generate_forced(self, *a, **kw):
        return self._run(self.engine.generate_forced(*a, **kw))

    def shutdown(self):
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)


def run_checks(engine) -> dict[str, str]:
    verdicts = {}
    for name, fn in CHECKS.items():
        try:
            fn(engine)
            verdicts[name] = "ok"
        except Exception:
            verdicts[name] = traceback.format_exc()[-1500:]
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="vllm")
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    cfg = EngineConfig(backend=args.engine, batch_size=8, unlimited_thinking_tokens=64)
    engine = build_engine(cfg, "float32", args.model)
    verdicts = {f"{engine.name}:{k}": v for k, v in run_checks(engine).items()}
    engine.shutdown()
    if args.engine == "vllm":  # the async (serving) engine, through the same checks

        async def build():
            return build_engine(cfg, "float32", args.model, serving=True)

        facade = SyncFacade(build)
        verdicts.update({f"vllm_async:{k}": v for k, v in run_checks(facade).items()})
        facade.shutdown()
    print("ENGINE_CHECKS " + json.dumps(verdicts), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()


def widened(engine, **kw):
    """A copy of the tiny engine's model with weights drawn wide (seeded): greedy rows that differ, unlike the
    untrained model's one repeated token. ``kw``: the HFEngine's settings (batch_size, ...)."""
    import copy

    import torch

    from components.inference.hf_engine import HFEngine
    model, draw = copy.deepcopy(engine.model), torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3, generator=draw)
    return HFEngine(model, engine.tokenizer, **kw)
