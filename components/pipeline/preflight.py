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
from components.distill.teachers import NEEDS_KEY, TEACHERS

_TEACHER_STAGES = {"distill"}
_ENGINE_STAGES = {"filter", "evaluate"}


def problems(cfg: ProfileConfig, stages: Iterable[str]) -> list[str]:
    from components.inference.engine import engine_problem  # heavy (torch): kept out of the flow module's import

    stages, out = set(stages), []
    if stages & _TEACHER_STAGES:
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
    if "evaluate" in stages and not cfg.evaluate.allow_contaminated:
        uncovered = [t for t in cfg.evaluate.tasks
                     if t not in cfg.decontamination.tasks and not (t == "heldout" and cfg.decontamination.include_heldout)]
        if uncovered:
            out.append(f"evaluate.tasks: {uncovered} would be reported, but the training data is not decontaminated "
                       "against them; add them to decontamination.tasks (or set evaluate.allow_contaminated: true to "
                       "report them tagged contaminated)")
    if "train" in stages and cfg.sft.deepspeed == "always" and importlib.util.find_spec("deepspeed") is None:
        out.append("sft.deepspeed: 'always' but deepspeed is not installed; install it or set 'auto'")
    if "train" in stages and cfg.sft.attn_implementation == "flash_attention_2" \
            and importlib.util.find_spec("flash_attn") is None:
        out.append("sft.attn_implementation: flash_attention_2 needs the flash-attn package (pip install -e .[gpu] "
                   "on a CUDA machine); use sdpa here")
    return out


def preflight(cfg: ProfileConfig, stages: Iterable[str]) -> None:
    found = problems(cfg, stages)
    if found:
        raise ConfigError(f"profile {cfg.name!r} cannot run here:\n" + "\n".join(f"  {p}" for p in found))
