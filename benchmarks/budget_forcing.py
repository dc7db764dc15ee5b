"""Budget forcing cost, measured side by side on one engine in one run.

Prints:
1. tokens/s of budget-forced generation vs plain generation of the same tokens per
   row (HF: rows leave the batch at the same steps; goal >= 0.95x);
2. prefilled tokens with 4 forced waits vs the minimum possible (the prompts once;
   goal <= 1.05x);
3. the s1 reference approach (re-prompt the whole text after every "Wait") for
   comparison: its prefilled tokens and time.

    python benchmarks/budget_forcing.py [--model models/tiny/sft] [--batch 64] [--waits 4]

``--engine vllm`` (run with the vLLM venv's python) prints figure 1 for the vLLM
engine, whose forcing is a batch-level logits processor. ``--random-model
HIDDEN,LAYERS`` builds an untrained Qwen2 of that size (tokenizer trained on the
procedural corpus) instead of loading ``--model``: e.g. ``768,12`` is ~100M
parameters, where the forward pass dominates as it does on a GPU.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from components.config import HeldoutConfig, PoolConfig
from components.data.pool import generate_heldout
from components.formatting import ANSWER_START, thinking_prompt
from components.inference.budget_forcing import BudgetSpec
from components.inference.engine import Sampling
from components.inference.hf_engine import HFEngine


def random_model(out: Path, hidden: int, layers: int) -> Path:
    """An untrained Qwen2 (head_dim 64) with the tiny BPE tokenizer, saved like a hub model."""
    from components.config import ModelConfig, PretrainConfig
    from components.data.base_model import build_model, corpus_questions, textbook_document
    from components.data.tokenizer import train_tokenizer
    pool = PoolConfig()
    qa = corpus_questions(PretrainConfig(documents=400), pool.domains, pool.min_difficulty, pool.max_difficulty)
    tok = train_tokenizer([textbook_document(q) for q, _ in qa], vocab_size=300)
    heads = max(1, hidden // 64)
    model = build_model(ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads,
                                    num_kv_heads=max(1, heads // 4), intermediate_size=4 * hidden,
                                    max_position_embeddings=2048), len(tok), tok.pad_token_id, tok.eos_token_id)
    print(f"random model: hidden {hidden}, {layers} layers, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          "parameters")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def plain_of_lengths(engine, prompts: list[str], lengths: list[int]) -> None:
    """Plain greedy decoding of exactly ``lengths[i]`` tokens for row ``i`` (stop tokens banned): the forced
    run's shape, each row leaving the batch at the step the forced one left it, without the forcing."""
    from components.inference.decoding import decode
    enc = engine._encode(prompts)
    made, stops = [0] * len(prompts), list(engine.vocab.stop_ids)

    def pick(rows, scores):
        scores[:, stops] = float("-inf")
        return scores.argmax(dim=-1)

    def done(row, token):
        made[row] += 1
        return made[row] >= lengths[row]
    decode(engine.model, enc["input_ids"], enc["attention_mask"], max(lengths), pick, done)


def vllm_throughput(args, prompts_for) -> None:
    """Figure 1 on the offline vLLM engine: forced vs plain decoding of the same number of tokens."""
    from components.inference.vllm_engine import VLLMEngine
    engine = VLLMEngine.from_pretrained(args.model, "float32", batch_size=args.batch, unlimited_thinking_tokens=4096)
    prompts = prompts_for(engine.tokenizer)
    spec = BudgetSpec(max_thinking_tokens=args.budget, num_waits=args.waits, final_answer_prefix="Answer:",
                      max_answer_tokens=16)
    engine.generate_forced(prompts[:4], [spec] * 4)  # warm-up
    forced_s, plain_s, tokens = [], [], 0
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = engine.generate_forced(prompts, [spec] * len(prompts))
        forced_s.append(time.perf_counter() - t)
        tokens = sum(len(r.token_ids) for r in res)
        steps = max(len(r.token_ids) for r in res)
        ban = Sampling(max_new_tokens=steps, min_new_tokens=steps, banned_token_ids=engine.vocab.stop_ids)
        t = time.perf_counter()
        plain = engine.generate(prompts, ban)
        plain_s.append(time.perf_counter() - t)
        plain_tokens = sum(c.completion_tokens for c in plain)
    f_tps, p_tps = tokens / min(forced_s), plain_tokens / min(plain_s)
    waits = sum(r.waits_used for r in res) / len(res)
    print(f"vllm {__import__('vllm').__version__}, model {args.model}, batch {len(prompts)}, budget {args.budget}, "
          f"num_waits {args.waits} (mean waits used {waits:.2f})")
    print(f"1. throughput: budget forcing {f_tps:,.0f} tok/s ({tokens:,} tokens) vs plain {p_tps:,.0f} tok/s "
          f"({plain_tokens:,} tokens) -> ratio {f_tps / p_tps:.3f}x (goal >= 0.9x)")
    engine.shutdown()


class PrefillCounter:
    """Counts tokens the model is fed in prefill forwards (more than one new token per row)."""

    def __init__(self, model):
        self.prefilled = 0
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            mask = kwargs.get("attention_mask")
            self.prefilled += int(mask.sum()) if mask is not None and mask.shape == ids.shape else ids.numel()


def reference_reprompt(engine: HFEngine, prompts: list[str], spec: BudgetSpec) -> list[str]:
    """s1's reference loop: generate to a stop token, append "Wait", re-prompt the whole text."""
    stops = engine.vocab.stop_ids
    texts = list(prompts)
    used = [0] * len(prompts)
    for i in range(spec.num_waits + 1):
        left = [max(1, spec.max_thinking_tokens - u) for u in used]
        outs = engine.generate(texts, Sampling(max_new_tokens=max(left), stop_token_ids=stops))
        for j, c in enumerate(outs):
            ids = [t for t in c.token_ids[: left[j]] if t not in stops]
            texts[j] += engine.tokenizer.decode(ids)
            used[j] += len(ids)
            if i < spec.num_waits:
                texts[j] += spec.wait_strings[0]
                used[j] += len(engine.vocab.encode(spec.wait_strings[0]))
    texts = [t + ANSWER_START + spec.final_answer_prefix for t in texts]
    answers = engine.generate(texts, Sampling(max_new_tokens=spec.max_answer_tokens))
    return [t + a.text for t, a in zip(texts, answers)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny/sft", help="a saved model dir (run `make demo` first)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget", type=int, default=160)
    ap.add_argument("--waits", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--random-model", default=None, help="HIDDEN,LAYERS: benchmark an untrained model of that size")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.random_model:
        import tempfile
        hidden, layers = (int(x) for x in args.random_model.split(","))
        args.model = str(random_model(Path(tempfile.mkdtemp()), hidden, layers))
    if not Path(args.model).exists():
        raise SystemExit(f"--model {args.model} not found: run `make demo` (or pass a saved model directory)")
    qs = generate_heldout(HeldoutConfig().seed, args.batch, PoolConfig().domains, 3, 6)
    if args.engine == "vllm":
        return vllm_throughput(args, lambda tok: [thinking_prompt(tok, q.question) for q in qs])
    engine = HFEngine.from_pretrained(args.model, batch_size=args.batch)
    counter = PrefillCounter(engine.model)
    prompts = [thinking_prompt(engine.tokenizer, q.question) for q in qs]
    prompt_tokens = sum(len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    spec = BudgetSpec(max_thinking_tokens=args.budget, num_waits=args.waits, final_answer_prefix="Answer:",
                      max_answer_tokens=16)

    engine.generate_forced(prompts[:4], [spec] * 4)  # warm-up
    forced_s, plain_s, steps = [], [], 0
    for _ in range(args.repeats):
        counter.prefilled = 0
        t = time.perf_counter()
        res = engine.generate_forced(prompts, [spec] * len(prompts))
        forced_s.append(time.perf_counter() - t)
        forced_prefill = counter.prefilled
        lengths = [len(r.token_ids) for r in res]
        t = time.perf_counter()
        plain_of_lengths(engine, prompts, lengths)
        plain_s.append(time.perf_counter() - t)
    steps, tokens = max(lengths), sum(lengths)
    f_tps, p_tps = tokens / min(forced_s), tokens / min(plain_s)
    waits = sum(r.waits_used for r in res) / len(res)

    counter.prefilled = 0
    t = time.perf_counter()
    reference_reprompt(engine, prompts, spec)
    ref_s = time.perf_counter() - t
    ref_prefill = counter.prefilled

    print(f"model {args.model}, batch {len(prompts)}, budget {args.budget}, num_waits {args.waits} "
          f"(mean waits used {waits:.2f}), {torch.get_num_threads()} threads")
    print(f"1. throughput: budget forcing {f_tps:,.0f} tok/s vs plain {p_tps:,.0f} tok/s "
          f"({tokens:,} tokens, at most {steps} per row) -> ratio {f_tps / p_tps:.3f}x (goal >= 0.95x)")
    print(f"2. prefilled tokens with {args.waits} waits: {forced_prefill:,} vs minimum {prompt_tokens:,} "
          f"-> {forced_prefill / prompt_tokens:.3f}x (goal <= 1.05x)")
    print(f"3. s1 reference (re-prompt per wait): {ref_s:.2f}s vs ours {min(forced_s):.2f}s "
          f"({ref_s / min(forced_s):.2f}x slower); prefilled {ref_prefill:,} tokens "
          f"({ref_prefill / prompt_tokens:.2f}x the minimum)")


if __name__ == "__main__":
    main()
