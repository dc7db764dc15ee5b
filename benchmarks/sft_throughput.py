"""SFT throughput on the tiny profile: random batches, length-sorted micro-batches, packing, in one run.

Trains the same examples (the tiny selection, data/tiny/sft_tokens.jsonl, from
`make demo`) for one epoch each way from models/tiny/base and prints tokens/s,
padding efficiency (real tokens / tokens computed; goal >= 0.95 with packing)
and, on a GPU, MFU (goal >= 45%). The ways: one random batch of the global batch
per step; ``sft.train_sampling: sorted_steps`` (the same examples per step,
shortest first, in micro-batches of the profile's per-device batch, or half the
global batch; the same loss up to float rounding); packing.

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
    glob = cfg.sft.global_batch_size
    micro = cfg.sft.per_device_batch_size if cfg.sft.per_device_batch_size < glob else max(1, glob // 2)
    ways = {"random batches": {"per_device_batch_size": glob, "train_sampling": "random", "packing": False},
            f"sorted_steps ({glob // micro} x {micro})": {"per_device_batch_size": micro, "train_sampling": "sorted_steps",
                                                       "packing": False},
            "packing": {"per_device_batch_size": glob, "train_sampling": "random", "packing": True}}
    results = {}
    for name, way in ways.items():
        sft = cfg.sft.model_copy(update={"epochs": a.epochs, "block_size": a.block_size, **way})
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = train_sft(sft, paths.base_model, examples, Path(tmp) / "out", Path(tmp) / "work",
                                      cfg.model.dtype)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{len(examples)} examples, {sum(len(e.input_ids) for e in examples)} tokens, block {a.block_size}, "
          f"global batch {cfg.sft.global_batch_size}, {a.epochs:g} epoch(s), {device}")
    for name, r in results.items():
        mfu = "n/a (no accelerator peak on CPU)" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(f"{name:<22} {r['tokens_per_second']:>9.1f} real tokens/s, padding efficiency "
              f"{r['padding_efficiency']:.3f}, rows {r['rows']}, steps {r['steps']}, {r['train_seconds']:.1f} s, "
              f"loss {r['train_loss']:.5f}, MFU {mfu}")
    plain, sorted_, packed = results.values()
    print(f"sorted_steps speed-up {sorted_['tokens_per_second'] / plain['tokens_per_second']:.2f}x (loss "
          f"{sorted_['train_loss']:.5f} vs {plain['train_loss']:.5f}: the same examples per step); packing speed-up "
          f"{packed['tokens_per_second'] / plain['tokens_per_second']:.2f}x; goal: padding efficiency >= 0.95 with "
          f"packing ({packed['padding_efficiency']:.3f})")


if __name__ == "__main__":
    main()
