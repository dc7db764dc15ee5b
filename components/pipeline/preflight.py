"""Checks that a profile can run the chosen stages, before any expensive work starts.

Config validation (components/config.py) catches malformed params; this catches
params that are well-formed but cannot run here: a teacher with no client, a
missing API key, an engine not installed, an eval file that is not there.

    preflight(cfg, ["distill", "filter"])  # raises ConfigError naming the keys
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterable

from components.config import ConfigError, ProfileConfig
from components.data.hub_pins import is_hub_id, unpinned
from components.distill.teachers import NEEDS_KEY, TEACHERS
from components.inference.methods.registry import hub_models, section_problems

_TEACHER_STAGES = {"distill"}
_ENGINE_STAGES = {"filter", "evaluate"}


def problems(cfg: ProfileConfig, stages: Iterable[str]) -> list[str]:
    from components.inference.engine import engine_problem  # heavy (torch): kept out of the flow module's import

    stages, out = set(stages), []
    # every source ships its traces (s1K-1.1's) and distill takes them: the teacher answers only rows without one,
    # and distill checks its key then, before any call
    published = cfg.teacher.use_published and all(s.thinking_field for s in cfg.pool.sources)
    if stages & _TEACHER_STAGES and not published:
        if cfg.teacher.kind not in TEACHERS:
            out.append(f"teacher.kind: {cfg.teacher.kind!r} has no client in this build; available: {sorted(TEACHERS)}")
        elif cfg.teacher.kind in NEEDS_KEY and not os.environ.get(cfg.teacher.api_key_env):
            out.append(f"teacher.api_key_env: environment variable {cfg.teacher.api_key_env} is not set; "
                       "export the API key there (keys never go in params.yaml)")
        if cfg.teacher.kind == "vllm" and not cfg.teacher.base_url:
            out.append("teacher.base_url: a vllm teacher needs the server's URL, e.g. http://host:8000/v1")
    if "filter" in stages and cfg.domain.classifier == "llm":
        if not cfg.domain.base_url:
            out.append("domain.base_url: the llm classifier needs an OpenAI-compatible endpoint (…/v1)")
        elif "127.0.0.1" not in cfg.domain.base_url and not os.environ.get(cfg.domain.api_key_env):
            out.append(f"domain.api_key_env: environment variable {cfg.domain.api_key_env} is not set; "
                       "export the classifier's API key there")
    if stages & _ENGINE_STAGES and (why := engine_problem(cfg.engine.backend)):
        out.append(f"engine.backend: {why}")
    if "filter" in stages:
        for src in cfg.decontamination.eval_sets:
            if not Path(src).exists():
                out.append(f"decontamination.eval_sets: {src} not found")
    if "evaluate" in stages:
        out += section_problems(cfg.evaluate)
    if "evaluate" in stages and not cfg.evaluate.allow_contaminated:
        uncovered = [t for t in cfg.evaluate.tasks
                     if t not in cfg.decontamination.tasks and not (t == "heldout" and cfg.decontamination.include_heldout)]
        if uncovered:
            out.append(f"evaluate.tasks: {uncovered} would be reported, but the training data is not decontaminated "
                       "against them; add them to decontamination.tasks (or set evaluate.allow_contaminated: true to "
                       "report them tagged contaminated)")
    if "evaluate" in stages:
        out += serve_problems(cfg) + reward_device_problems(cfg)
    out += gated_task_problems(cfg, stages)
    out += unpinned(cfg, stages, hub_models)
    if "train" in stages and cfg.sft.deepspeed == "always" and importlib.util.find_spec("deepspeed") is None:
        out.append("sft.deepspeed: 'always' but deepspeed is not installed; install it or set 'auto'")
    if "train" in stages and cfg.sft.attn_implementation == "flash_attention_2" \
            and importlib.util.find_spec("flash_attn") is None:
        out.append("sft.attn_implementation: flash_attention_2 needs the flash-attn package (pip install -e .[gpu] "
                   "on a CUDA machine); use sdpa here")
    return out


def serve_problems(cfg: ProfileConfig) -> list[str]:
    """Evaluation through Serve on a host other hosts reach needs the bearer token (replicas refuse to start
    without one: found hours in, after training, otherwise)."""
    from components.serving.launch import is_loopback  # no Ray import at module level
    s = cfg.serve
    if cfg.evaluate.via != "serve" or is_loopback(s.host) or os.environ.get(s.api_key_env):
        return []
    return [f"serve.api_key_env: serve.host {s.host!r} is not loopback, so the Serve endpoint requires a bearer "
            f"token, and the environment variable {s.api_key_env} is empty; export {s.api_key_env}=<token> "
            "(clients send it as 'Authorization: Bearer <token>'), or set serve.host: 127.0.0.1"]


def reward_device_problems(cfg: ProfileConfig) -> list[str]:
    """A model a method loads (REBASE's process reward) on one of the in-process vLLM engine's GPUs needs the
    room the engine leaves."""
    from components.inference.methods.registry import method_models  # the methods' modules: torch
    eng, out = cfg.engine, []
    for name, use in method_models(cfg.evaluate):
        loaded = is_hub_id(use.name) or Path(use.name).exists()  # a name registered in code loads nothing
        if not loaded or not use.device.startswith("cuda") or eng.backend != "vllm":
            continue
        index = int(use.device.split(":")[1]) if ":" in use.device else 0
        if index < eng.tensor_parallel_size and eng.gpu_memory_utilization is None:
            out.append(f"evaluate.methods.{name}.{use.key}_device: {use.device} is one of the in-process "
                       f"engine's {eng.tensor_parallel_size} GPUs, which vLLM fills to 90% by default; set "
                       "engine.gpu_memory_utilization to leave the model room (a 7B PRM in bf16: ~16 GB, e.g. "
                       "0.75 on an 80 GB GPU), or put it on a GPU the engine does not use, or on cpu")
    return out


GATED_DATASETS = {"Idavidrein/gpqa"}  # access is granted per account on the dataset page; downloads need a token


def hf_token() -> str | None:
    """The Hugging Face token the datasets library will send: $HF_TOKEN (or $HUGGING_FACE_HUB_TOKEN), else the
    token file `hf auth login` writes."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return get_token()


def gated_task_problems(cfg: ProfileConfig, stages: set[str]) -> list[str]:
    """Tasks read from a gated Hugging Face dataset (evaluation, or decontamination in the filter stage) with no
    token to read them: the download would fail with a 401 when the stage reaches it."""
    from components.data.tasks import TASKS
    wanted = (set(cfg.evaluate.tasks) if "evaluate" in stages else set()) \
        | (set(cfg.decontamination.tasks) if "filter" in stages else set())
    gated = sorted(t for t in wanted if t in TASKS and TASKS[t].hf_dataset in GATED_DATASETS
                   and t not in cfg.evaluate.task_files)
    if not gated or hf_token():
        return []
    datasets = sorted({TASKS[t].hf_dataset for t in gated})
    return [f"evaluate.tasks / decontamination.tasks: {gated} read the gated dataset(s) {datasets}, and no Hugging "
            "Face token is set; accept the dataset's terms on its page, then export HF_TOKEN=<token> (or run "
            "`hf auth login`), or give a local file in evaluate.task_files"]


def preflight(cfg: ProfileConfig, stages: Iterable[str]) -> None:
    found = problems(cfg, stages)
    if found:
        raise ConfigError(f"profile {cfg.name!r} cannot run here:\n" + "\n".join(f"  {p}" for p in found))
