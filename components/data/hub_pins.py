"""Every hub model and dataset a profile downloads is pinned to a commit.

A hub id (``org/name``) read at ``main`` changes under a run: other weights, another tokenizer, other questions,
or new code in a repository whose code runs. :func:`unpinned` lists each hub id the chosen stages would download
without a pinned commit, as ``key: problem; fix``; :func:`require_pinned` refuses the run with that list before
any stage starts. A local directory (a path that exists, or one with more than one ``/``) needs no revision.

    require_pinned(cfg, ["collect", "filter"])   # ConfigError naming pool.sources.0.revision, ...
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Optional

from components.config import ConfigError, EvaluateConfig, ProfileConfig
from components.data.tasks import TASKS, unpinned_task

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# the stages that load the base model by its name (the base-model stage of a hub profile only records it)
BASE_MODEL_STAGES = ("filter", "tokenize", "train", "evaluate")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is read from the hub: ``org/name`` that is not a path here."""
    return bool(HUB_ID.fullmatch(name)) and not Path(name).exists()


def _pin(key: str, name: str, kind: str = "model") -> str:
    return (f"{key}: {name} is a hub {kind} with no pinned commit; set {key} to the 40-hex commit SHA to "
            f"download (its history on the hub lists them), or give a local directory instead")


MethodModels = Callable[[EvaluateConfig], list[tuple[str, str, Optional[str]]]]


def unpinned(cfg: ProfileConfig, stages: Optional[Iterable[str]] = None,
             method_models: Optional[MethodModels] = None) -> list[str]:
    """``key: problem; fix`` for each hub id that ``stages`` (default: all) would download without a commit.
    ``method_models``: the models the evaluation's methods load besides the engine, as ``(revision key, model,
    revision)`` (:func:`components.inference.methods.registry.hub_models`, passed in by the caller: this layer
    does not know the methods)."""
    run = set(stages) if stages is not None else None
    on = (lambda *names: run is None or bool(run & set(names)))  # noqa: E731
    out: list[str] = []
    if on(*BASE_MODEL_STAGES) and cfg.model.source == "hub" and is_hub_id(cfg.model.name) and not cfg.model.revision:
        out.append(_pin("model.revision", cfg.model.name))
    if on("collect"):
        out += [_pin(f"pool.sources.{i}.revision", s.name, "dataset") for i, s in enumerate(cfg.pool.sources)
                if s.kind == "hf" and not s.revision]
    if on("filter") and cfg.difficulty.enabled:
        for name in cfg.difficulty.students:  # 'base' loads at model.revision, checked above
            if name != "base" and is_hub_id(name) and name not in cfg.difficulty.revisions:
                out.append(_pin(f"difficulty.revisions.{name}", name))
    task_files = cfg.evaluate.task_files
    for stage, key, tasks in (("filter", "decontamination.tasks", cfg.decontamination.tasks),
                              ("evaluate", "evaluate.tasks", cfg.evaluate.tasks)):
        if on(stage):
            out += [f"{key}: {problem}" for t in tasks if t in TASKS and t not in task_files
                    and (problem := unpinned_task(t))]
    if on("evaluate") and method_models is not None:
        out += [_pin(key, name) for key, name, revision in method_models(cfg.evaluate)
                if is_hub_id(name) and not revision]
    return out


def require_pinned(cfg: ProfileConfig, stages: Optional[Iterable[str]] = None,
                   method_models: Optional[MethodModels] = None) -> None:
    """Refuse a run whose stages would download a hub model or dataset at no pinned commit."""
    problems = unpinned(cfg, stages, method_models)
    if problems:
        raise ConfigError(f"{cfg.name}: hub downloads must be pinned to a commit:\n" +
                          "\n".join(f"  {p}" for p in problems))
