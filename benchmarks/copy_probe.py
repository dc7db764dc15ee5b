"""Probe a pre-training checkpoint of a miniature run: can the base model copy the operands and finish the sum?

Greedy-completes "Problem: Q\\nSolution:\\n" (the textbook format) on held-out questions and reports the
answer accuracy and the share whose first worked line (the operands restated) is exact: the digit-copying
skill whose seed-dependent arrival makes the miniature fragile.

    python benchmarks/copy_probe.py RUN_ROOT SEED [N]   # RUN_ROOT: a benchmarks/miniature.py run directory
"""
from __future__ import annotations

import json
import sys
import time


def main(root: str, seed: int, n: int = 60) -> dict:
    import torch
    from safetensors import safe_open

    from benchmarks.miniature import seed_overrides
    from components.common.threads import use_threads
    from components.config import load_config
    from components.data import base_model as bm
    from components.data.pool import generate_heldout
    from components.data.tokenizer import train_tokenizer
    use_threads()
    started = time.time()
    cfg = load_config("params.yaml", overrides=seed_overrides(seed))
    corpus = bm.corpus_questions(cfg.pretrain, cfg.pool.domains, cfg.pool.min_difficulty, cfg.pool.max_difficulty)
    tok = train_tokenizer([bm.textbook_document(q) for q, _ in corpus], cfg.model.vocab_size)
    with safe_open(f"{root}/runs/tiny/pretrain.ckpt", "pt") as f:
        state = json.loads(f.metadata()["s1flow"])
        weights = {k[len("model."):]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    model = bm.build_model(cfg.model, len(tok), tok.pad_token_id, tok.eos_token_id)
    model.load_state_dict(weights)
    model.eval()
    held = generate_heldout(cfg.heldout.seed, n, cfg.pool.domains, cfg.heldout.min_difficulty,
                            cfg.heldout.max_difficulty)
    tok.padding_side = "left"
    enc = tok([f"Problem: {q.question}\nSolution:\n" for q in held], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=240, do_sample=False, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    correct = copied = 0
    for q, text in zip(held, texts):
        ref = bm.textbook_document(q.question).split("Solution:\n")[1]
        first_ref = next(ln for ln in ref.splitlines() if any(c.isdigit() for c in ln))
        first = next((ln for ln in text.splitlines() if any(c.isdigit() for c in ln)), None)
        copied += first == first_ref
        answer = text.split("Answer: ")[1].split("\n")[0].strip() if "Answer: " in text else None
        correct += answer == q.answer
    return {"step": state["step"], "loss_last50": round(sum(state["losses"][-50:]) / 50, 4),
            "accuracy": correct / n, "first_line_copied": copied / n, "n": n, "seconds": round(time.time() - started)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), *(int(x) for x in sys.argv[3:4]))))
