"""Budget forcing on vLLM does not depend on how the scheduler splits, pauses or preempts a request.

``python -m tests.support.vllm_stress_checks --model DIR`` (in the vLLM venv) runs the same greedy requests,
plain and forced, on two offline engines: vLLM's default scheduling, and a stressed one whose token budget
per step chunks every prompt (``max_num_batched_tokens`` = the batch size, ``long_prefill_token_threshold``
below every prompt's length) and whose KV cache holds a fraction of the batch, so vLLM preempts requests
and recomputes them. It prints ``STRESS_CHECKS {json}``: the per-request results of both engines and the
preemptions the stressed engine counted (its ``vllm:num_preemptions`` metric), read by
tests/inference/test_vllm_forcing.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec
from components.inference.engine import Sampling
from tests.support import engine_checks

BATCH = 64
BLOCK = 32  # vLLM's CPU attention needs a multiple of 32
# The untrained model never ends thinking by itself; this pull towards the stop tokens makes it stop at
# different points per prompt, so some requests use their waits and some hit their budget.
STOP_PULL = 0.9
BUDGETS = (16, 40, 72)
# Each engine's KV cache, in blocks of BLOCK tokens: room for the whole batch, and for a fraction of it.
DEFAULT_BLOCKS, STRESSED_BLOCKS = 1024, 24
# vLLM's CPU build cannot run a seeded sampled request beside a partly prefilled one: it winds back every
# discarded row's generator with ``set_offset`` (vllm/v1/worker/gpu_model_runner.py, ``_bookkeeping_sync``),
# which a CPU torch.Generator does not have ("CPU Generator does not use offset"), and the engine dies. So the
# stressed engine runs the greedy conformance checks; the property checks cover sampled rows.
SAMPLED_CHECKS = ("check_sampling_respects_budget_and_is_seeded",
                  "check_a_sampled_row_draws_with_its_own_seed_wherever_it_sits")
CHUNK = 16  # prompt tokens per step and request (every prompt here is longer)
STRESS = dict(enable_chunked_prefill=True, max_num_batched_tokens=BATCH, long_prefill_token_threshold=CHUNK,
              num_gpu_blocks_override=STRESSED_BLOCKS, enable_prefix_caching=False)  # no cached prompt prefixes


def questions(n: int) -> list[str]:
    return [f"What is {17 * i + 3} + {29 * i % 97}? Show the steps." if i % 2 else f"Solve {i} * x = {3 * i + 6}."
            for i in range(n)]


def forced_specs(n: int) -> list[BudgetSpec]:
    return [BudgetSpec(max_thinking_tokens=BUDGETS[i % len(BUDGETS)], num_waits=(i // len(BUDGETS)) % 3,
                       final_answer_prefix="Answer:" if i % 2 else "", max_answer_tokens=12) for i in range(n)]


def build(model: str, stressed: bool):
    from transformers import AutoTokenizer
    from vllm import LLM

    from components.inference.vllm_engine import VLLMEngine, _engine_kwargs
    kwargs = _engine_kwargs(model, "float32", BATCH, 1, None, 0, 512)
    kwargs.update(block_size=BLOCK, disable_log_stats=False,
                  **(STRESS if stressed else {"num_gpu_blocks_override": DEFAULT_BLOCKS}))
    return VLLMEngine(LLM(**kwargs), AutoTokenizer.from_pretrained(model), BATCH, 64)


def preemptions(engine) -> int:
    return int(sum(m.value for m in engine.backend.get_metrics() if m.name == "vllm:num_preemptions"))


def run(model: str, stressed: bool) -> dict:
    start = time.time()
    engine = build(model, stressed)
    started = round(time.time() - start, 1)
    try:
        prompts = [thinking_prompt(engine.tokenizer, q) for q in questions(BATCH)]
        sampling = Sampling(logit_bias={i: STOP_PULL for i in engine.vocab.stop_ids})
        forced = engine.generate_forced(prompts, forced_specs(BATCH), sampling)
        plain = engine.generate(prompts, Sampling(max_new_tokens=48))
        preempted = preemptions(engine)  # while the requests above ran
        prompt_tokens = [len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        # the engine protocol's conformance checks, on the stressed engine too
        conformance = {}
        for name, check in engine_checks.CHECKS.items() if stressed else ():
            if name in SAMPLED_CHECKS:
                continue
            try:
                check(engine)
                conformance[name] = "ok"
            except Exception:
                conformance[name] = traceback.format_exc()[-1500:]
        return {"conformance": conformance, "forced": [[r.token_ids, r.waits_used, r.hit_budget] for r in forced],
                "plain": [c.token_ids for c in plain], "preemptions": preempted,
                "min_prompt_tokens": min(prompt_tokens), "start_seconds": started,
                "seconds": round(time.time() - start, 1)}
    finally:
        engine.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    out = {}
    for name, stressed in (("default", False), ("stressed", True)):
        out[name] = run(args.model, stressed)
        print(f"{name}: {out[name]['seconds']} s ({out[name]['start_seconds']} s to start), "
              f"{out[name]['preemptions']} preemptions", file=sys.stderr)
    print("STRESS_CHECKS " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
