"""SFT throughput on the tiny profile, with and without sequence packing, in one run.

Trains the same examples (the tiny selection, data/tiny/sft_tokens.jsonl, from
`make demo`) for one epoch each way from models/tiny/base and prints tokens/s,
padding efficiency (real tokens / tokens computed; goal >= 0.95 with packing)
and, on a GPU, MFU (goal >= 45%).

    python benchmarks/sft_throughput.py [--epochs 1] [--block-size 512]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")

from components.config import load_config  # noqa: E402
from components.formatting import TokenizedExample  # noqa: E402
from components.paths import Paths  # noqa: E402
from components.records import iter_jsonl  # noqa: E402
from components.training.sft import train_sft  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--profile", default="tiny")
    a = ap.parse_args()
    cfg = load_config(profile=a.profile)
    paths = Paths.for_profile(cfg.name)
    if not paths.sft_tokens.exists():
        raise SystemExit(f"{paths.sft_tokens} missing: run `make demo` (or s1flow stage tokenize) first")
    examples = [TokenizedExample(**d) for d in iter_jsonl(paths.sft_tokens)]
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    results = {}
    for packing in (False, True):
        sft = cfg.sft.model_copy(update={"epochs": a.epochs, "packing": packing, "block_size": a.block_size})
        with tempfile.TemporaryDirectory() as tmp:
            results[packing] = train_sft(sft, paths.base_model, examples, Path(tmp) / "out", Path(tmp) / "work",
                                         cfg.model.dtype)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{len(examples)} examples, {sum(len(e.input_ids) for e in examples)} tokens, block {a.block_size}, "
          f"global batch {cfg.sft.global_batch_size}, {a.epochs:g} epoch(s), {device}")
    for packing, r in results.items():
        mfu = "n/a (no accelerator peak on CPU)" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(f"packing={'on ' if packing else 'off'}: {r['tokens_per_second']:>9.1f} real tokens/s, "
              f"padding efficiency {r['padding_efficiency']:.3f}, rows {r['rows']}, steps {r['steps']}, "
              f"{r['seconds']:.1f} s, loss {r['train_loss']:.3f}, MFU {mfu}")
    ratio = results[True]["tokens_per_second"] / results[False]["tokens_per_second"]
    print(f"packing speed-up {ratio:.2f}x; goal: padding efficiency >= 0.95 with packing "
          f"({results[True]['padding_efficiency']:.3f})")


if __name__ == "__main__":
    main()
