"""One rank of a DeepSpeed Ulysses SFT run on the CPU (gloo), run as a child process by the test.

    python -m tests.support.ulysses_worker RANK WORLD PORT MODEL_DIR EXAMPLES_JSON CFG_JSON OUT_DIR [OPTIONS_JSON]
Writes OUT_DIR/rank<RANK>.json: the per-step loss history and the summary.
OPTIONS_JSON: ``{"nodes": true}`` runs each rank as the only process of its own node (local rank 0, its own work
directory: checkpoints cross only through ``sft.checkpoint_uri``); ``{"stop_after": N}`` ends both processes
(exit status 0, no record written) once checkpoint-N is saved and marked, as a lost worker would end the run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(rank: int, world: int, port: int, model_dir: str, examples: str, cfg_json: str, out: str,
         options: dict | None = None) -> None:
    options = options or {}
    nodes = bool(options.get("nodes"))
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": "0" if nodes else str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": "1" if nodes else str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "S1FLOW_NO_PROGRESS": "1"})
    import torch
    torch.set_num_threads(1)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from components.config import SFTConfig
    from components.formatting import TokenizedExample
    from components.training.sft import train_sft
    cfg = SFTConfig.model_validate_json(cfg_json)
    items = [TokenizedExample(**d) for d in json.loads(Path(examples).read_text())]
    if cfg.attn_implementation == "flash_attention_2":  # no flash-attn on a CPU: transformers' own flash
        _cpu_flash()                                      # dispatch with plain-torch kernels (cpu_flash.py)
    seen = []  # the sequence length each embedding call on this rank saw: its shard of the sequence
    embed = torch.nn.Embedding.forward
    torch.nn.Embedding.forward = lambda self, x: (seen.append(list(x.shape)), embed(self, x))[1]
    if options.get("stop_after"):
        _stop_after(int(options["stop_after"]))
    summary = train_sft(cfg, model_dir, items, Path(out) / "model", Path(out) / f"work{rank}")
    history = json.loads((Path(out) / f"work{rank}" / "loss_history.json").read_text()) if rank == 0 else None
    attention = ALL_ATTENTION_FUNCTIONS[cfg.attn_implementation].__name__  # DeepSpeed's wrapper under Ulysses
    Path(out, f"rank{rank}.json").write_text(json.dumps({"summary": summary, "history": history, "shapes": seen,
                                                         "attention": attention}, default=str))


def _stop_after(step: int) -> None:
    """Both processes leave at once after checkpoint-``step`` is saved and marked (CheckpointSync.on_save)."""
    import components.training.sft as sft

    class StopAfter(sft.CheckpointSync):
        def on_save(self, args, state, control, **kw):
            super().on_save(args, state, control, **kw)
            if state.global_step == step:
                import torch.distributed as dist
                dist.barrier()  # rank 0 has marked it
                os._exit(0)
    sft.CheckpointSync = StopAfter


def _cpu_flash() -> None:
    """Load with sdpa, then switch the model to flash_attention_2 served by tests/support/cpu_flash.py."""
    import transformers.modeling_flash_attention_utils as fa
    from transformers.modeling_flash_attention_utils import _pad_input, _unpad_input

    import components.training.sft as sft
    from tests.support.cpu_flash import flash_attn_func, flash_attn_varlen_func
    fa._lazy_imports = lambda *a, **k: (flash_attn_func, flash_attn_varlen_func, None, _pad_input, _unpad_input)
    fa._loaded_implementation = None
    load = sft.load_model

    def load_as_flash(path, dtype, attn, **kwargs):
        model, tokenizer = load(path, dtype, "sdpa", **kwargs)
        model.config._attn_implementation = "flash_attention_2"
        return model, tokenizer
    sft.load_model = load_as_flash


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), int(a[1]), int(a[2]), a[3], a[4], a[5], a[6], json.loads(a[7]) if len(a) > 7 else None)
