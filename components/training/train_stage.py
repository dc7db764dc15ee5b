"""Stage entry point: supervised fine-tuning (receives only ``sft`` and ``model``)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from components.common.hashing import content_hash
from components.common.threads import use_threads
from components.config import ModelConfig, SFTConfig
from components.formatting import TokenizedExample
from components.paths import Paths, base_model_ref
from components.records import iter_jsonl, write_json
from components.training.memory import check_fits, plan_dict, sft_memory_plan
from components.training.ray_launcher import train_with_ray


def base_model_revision(model: ModelConfig) -> Optional[str]:
    """The commit every load of the base model reads: ``model.revision`` for a hub model (None for the
    built one, which is a local directory)."""
    return model.revision if model.source == "hub" else None


def memory_plan(sft: SFTConfig, model_ref: str, revision: Optional[str] = None) -> dict:
    """Print the ZeRO-3 memory estimate for this run; on CUDA, refuse a plan that cannot fit. ``revision``: the
    pinned commit of a hub id."""
    import torch
    from transformers import AutoConfig
    per_node = min(sft.world_size, 8)
    config = AutoConfig.from_pretrained(model_ref, revision=revision, trust_remote_code=False)
    plan = sft_memory_plan(config, sft, gpus_per_node=per_node,
                           nodes=-(-sft.world_size // per_node))
    print(f"memory plan: {plan.describe()}")
    if torch.cuda.is_available():
        check_fits(plan, torch.cuda.get_device_properties(0).total_memory / 2**30)
    return plan_dict(plan)


def sft_fingerprint(sft: SFTConfig, model_ref: str, tokens: Path, revision: Optional[str] = None) -> str:
    """What a training run depends on: SFT params, the tokenized data, the base model (a hub id with its
    pinned ``revision``). Checkpoints live under it, so a run resumes only checkpoints of the same training
    (never another selection's, nor another commit's of the base model)."""
    base = Path(model_ref)
    if base.is_dir():  # config + weight file names and sizes: cheap even for 32B checkpoints
        files = sorted((f.name, f.stat().st_size) for f in base.iterdir() if f.is_file())
        base_id = json.dumps([files, (base / "config.json").read_text() if (base / "config.json").exists() else ""])
    else:
        base_id = f"{base}@{revision}" if revision else str(base)
    # where and how it runs, not what it trains
    where = {"checkpoint_uri", "ray_storage", "ray_resources_per_worker", "max_failures"}
    state = [sft.model_dump(mode="json", exclude=where), content_hash(tokens), base_id]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]


def train_stage(sft: SFTConfig, model: ModelConfig, paths: Paths) -> dict:
    """Supervised fine-tuning of the base model on the tokenized selection (resumes its own checkpoints)."""
    from components.training.sft import train_sft  # lazy: imports torch, transformers (the ray launcher trains in workers)
    use_threads()
    model_ref = base_model_ref(model, paths)
    revision = base_model_revision(model)
    examples = [TokenizedExample(**d) for d in iter_jsonl(paths.sft_tokens)]
    plan = memory_plan(sft, model_ref, revision)  # fails fast, with the numbers, when the config cannot fit
    fingerprint = sft_fingerprint(sft, model_ref, paths.sft_tokens, revision)
    work = paths.sft_work / fingerprint
    uri = sft.checkpoint_uri
    run_cfg = sft.model_copy(update={"checkpoint_uri": f"{uri.rstrip('/')}/{fingerprint}" if uri else None})
    if run_cfg.launcher == "ray":
        summary = train_with_ray(run_cfg, model_ref, paths.sft_tokens, paths.sft_model, work, model.dtype,
                                 revision=revision)
    else:
        summary = train_sft(run_cfg, model_ref, examples, paths.sft_model, work, model.dtype, revision=revision)
    summary["work_dir"] = str(work)
    summary["memory_plan"] = plan
    write_json(paths.metric("train.json"), summary)
    from components.training.live_metrics import write_loss_plot  # lazy: imports transformers
    write_loss_plot(work, paths.plot("train_loss.json"))  # a DVC plot (dvc plots show)
    return summary
