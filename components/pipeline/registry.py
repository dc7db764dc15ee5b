"""The stage registry: one record per stage, in pipeline order.

A record names the stage's entry function, the config it reads (entry argument ->
params path; the function receives exactly those, never the whole profile), the code
it runs, the files it reads and writes. ``dvc.yaml`` is rendered from it
(``s1flow dvc-yaml``; a test keeps the committed file equal), the Prefect cache key
hashes the same params and code, and ``run_stage`` calls the entry.

    run_stage("collect", cfg, Paths.for_profile(cfg.name))
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from components.config import ProfileConfig
from components.data.base_model_readiness import base_model_warning
from components.paths import Paths
from components.records import write_json

COMPONENTS = Path(__file__).resolve().parents[1]

# The shared schema and low-level helpers every stage runs (paths relative to components/).
SHARED_CODE = ("__init__.py", "config.py", "method_index.py", "records.py", "formatting.py", "paths.py", "common")

WHOLE_PROFILE = "*"
RELEASES = Path("releases")  # shipped base models (pretrain.release), relative to the project root


@dataclass(frozen=True)
class Plot:
    path: Callable[[Paths], Path]
    x: str
    y: str
    title: str
    template: str = ""                           # a DVC plot template ("" = linear)


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str                                   # "module:function"
    params: dict[str, str]                       # entry argument -> params path ('pool', 'sft.block_size', '*')
    code: tuple[str, ...]                        # beyond SHARED_CODE: files/packages under components/
    inputs: Callable[[Paths], list[Path]] = lambda p: []
    outs: Callable[[Paths], list[Path]] = lambda p: []
    metrics: Callable[[Paths], list[Path]] = lambda p: []
    uncached: Callable[[Paths], list[Path]] = lambda p: []      # outputs DVC does not cache (PNG plots)
    plots: tuple[Plot, ...] = ()
    services: dict[str, str] = field(default_factory=dict)      # entry argument -> "module:attr" passed in
    # "module:function" run around the entry: function(run, cfg, paths) -> result, ``run()`` calling the entry
    # (the train stage runs inside the MLflow run it streams live metrics into; its entry never sees tracking)
    wrap: str = ""
    # whether the stage runs on Ray with this profile (Ray Data, Ray Train, Ray Serve): after the last one, a
    # pipeline run releases the Ray it started
    on_ray: Callable[[ProfileConfig], bool] = lambda cfg: False
    # keys of its metrics file that the entry's result leaves out (its result is that file less these)
    result_omits: tuple[str, ...] = ()

    def function(self) -> Callable[..., dict]:
        module, attr = self.entry.split(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def doc(self) -> str:
        return (self.function().__doc__ or "").strip().splitlines()[0]

    def written(self, paths: Paths) -> list[Path]:
        """Everything the stage leaves on disk that later stages or users read."""
        return [*self.outs(paths), *self.metrics(paths)]


STAGE_LIST: tuple[Stage, ...] = (
    Stage("base-model", "components.data.base_model_stage:base_model_stage",
          {"model": "model", "pretrain": "pretrain", "domains": "pool.domains",
           "min_difficulty": "pool.min_difficulty", "max_difficulty": "pool.max_difficulty"},
          code=("data/base_model_stage.py", "data/base_release.py", "data/base_model.py", "data/tokenizer.py",
                "data/problems.py", "data/skill_probe.py", "data/base_model_readiness.py", "modeling.py"),
          inputs=lambda p: [RELEASES], outs=lambda p: [p.base_model], metrics=lambda p: [p.metric("base_model.json")]),
    Stage("collect", "components.data.collect_stage:collect_stage", {"pool": "pool", "heldout": "heldout"},
          code=("data/collect_stage.py", "data/pool.py", "data/pool_sources.py", "data/problems.py", "data/domains.py",
                "data/msc_domains.json"),
          outs=lambda p: [p.pool, p.heldout, p.quarantine], metrics=lambda p: [p.metric("collect_report.json")]),
    Stage("distill", "components.distill.distill_stage:distill_stage", {"teacher": "teacher"},
          code=("distill", "data/problems.py", "data/domains.py", "data/msc_domains.json"),
          inputs=lambda p: [p.pool], outs=lambda p: [p.traces], metrics=lambda p: [p.metric("distill_report.json")],
          on_ray=lambda cfg: True),
    Stage("filter", "components.curation.filter_stage:filter_stage",
          {"quality": "quality", "decontamination": "decontamination", "difficulty": "difficulty",
           "domain": "domain", "engine": "engine", "model": "model", "task_files": "evaluate.task_files"},
          code=("curation", "inference", "modeling.py", "data/problems.py", "data/domains.py", "data/msc_domains.json",
                "data/tasks.py"),
          inputs=lambda p: [p.pool, p.heldout, p.traces, p.base_model],
          outs=lambda p: [p.filtered, p.quality_pool],
          metrics=lambda p: [p.metric("filter_report.json")], on_ray=lambda cfg: True),
    Stage("select", "components.curation.select_stage:select_stage", {"selection": "selection"},
          code=("curation/select_stage.py", "curation/selection.py", "curation/selection_report.py",
                "data/domains.py", "data/problems.py", "data/msc_domains.json"),
          inputs=lambda p: [p.filtered, p.quality_pool, p.metric("filter_report.json")],
          outs=lambda p: [p.selected],
          metrics=lambda p: [p.metric("selection_report.json")], result_omits=("trace_tokens",),
          uncached=lambda p: [p.plot("selection_report.png")],
          plots=(Plot(lambda p: p.plot("selection_funnel.json"), "questions", "step",
                      "Selection funnel: questions left after each step", "bar_horizontal"),
                 Plot(lambda p: p.plot("selection_domains.json"), "selected", "domain",
                      "Selected questions per MSC domain", "bar_horizontal_sorted"))),
    Stage("tokenize", "components.training.tokenize_stage:tokenize_stage", {"block_size": "sft.block_size", "model": "model"},
          code=("training/tokenize_stage.py",), inputs=lambda p: [p.selected, p.base_model], outs=lambda p: [p.sft_tokens],
          metrics=lambda p: [p.metric("tokenize_report.json")]),
    Stage("train", "components.training.train_stage:train_stage", {"sft": "sft", "model": "model"},
          code=("training", "modeling.py"),
          inputs=lambda p: [p.sft_tokens, p.base_model], outs=lambda p: [p.sft_model],
          metrics=lambda p: [p.metric("train.json")],
          plots=(Plot(lambda p: p.plot("train_loss.json"), "step", "loss", "SFT training loss per step"),),
          wrap="components.tracking.training_run:train_in_run", on_ray=lambda cfg: cfg.sft.launcher == "ray"),
    Stage("evaluate", "components.evaluation.evaluate_stage:evaluate_stage",
          {"evaluate": "evaluate", "engine": "engine", "model": "model", "serve": "serve"},
          code=("evaluation", "inference", "serving", "modeling.py", "data/problems.py", "data/tasks.py",
                "data/base_model_readiness.py"),
          inputs=lambda p: [p.heldout, p.base_model, p.sft_model, p.metric("filter_report.json")],
          outs=lambda p: [p.eval_samples],
          metrics=lambda p: [p.metric("eval.json")],
          uncached=lambda p: [p.plot("scaling.png"), p.plot("compute_matched.png")],
          plots=(Plot(lambda p: p.plot("scaling.json"), "avg_thinking_tokens", "accuracy",
                      "Accuracy vs thinking tokens (budget forcing)"),),
          services={"launch_endpoint": "components.serving.launch:served_endpoint"},
          on_ray=lambda cfg: cfg.evaluate.via == "serve"),
    Stage("register", "components.tracking.register_stage:register_stage", {"profile": WHOLE_PROFILE},
          code=("tracking", "inference", "evaluation", "modeling.py", "data/problems.py", "data/base_model_readiness.py",
                "data/tasks.py"),
          inputs=lambda p: [p.metric("eval.json"), p.metric("train.json"), p.sft_model],
          outs=lambda p: [], metrics=lambda p: [p.metric("mlflow_run.json")]),
)

STAGES: dict[str, Stage] = {s.name: s for s in STAGE_LIST}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]


def config_value(cfg: ProfileConfig, path: str) -> Any:
    """The section, key or whole profile that ``path`` names."""
    if path == WHOLE_PROFILE:
        return cfg
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def stage_arguments(stage: Stage, cfg: ProfileConfig) -> dict[str, Any]:
    """Exactly the config the stage declares, keyed by its entry's argument names."""
    return {arg: config_value(cfg, path) for arg, path in stage.params.items()}


def stage_params(name: str, cfg: ProfileConfig) -> dict:
    """The declared params as plain JSON (for cache keys): ``{path: value}``."""
    out = {}
    for path in STAGES[name].params.values():
        value = config_value(cfg, path)
        out[path] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    return out


def code_files(name: str) -> list[Path]:
    """Every file of the stage's code (its own entries plus the shared schema)."""
    files = []
    for entry in (*SHARED_CODE, *STAGES[name].code):
        target = COMPONENTS / entry
        files += sorted(f for f in target.rglob("*") if f.suffix in (".py", ".json")) if target.is_dir() else [target]
        files += [d / "__init__.py" for d in target.parents if d != COMPONENTS and COMPONENTS in d.parents]
    return sorted(set(files))


def code_digest(name: str) -> str:
    """The stage's own code: editing it invalidates that stage's cached result (and what follows)."""
    h = hashlib.sha256()
    for f in code_files(name):
        h.update(str(f.relative_to(COMPONENTS)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def recorded_result(name: str, paths: Paths) -> Optional[dict]:
    """The result the stage's entry returned, read back from the metrics file it wrote (None when absent).
    JSON's types: a dict key that was a number reads back as a string."""
    stage = get_stage(name)
    (metric,) = stage.metrics(paths)
    if not metric.is_file():
        return None
    return {k: v for k, v in json.loads(metric.read_text()).items() if k not in stage.result_omits}


def run_stage(name: str, cfg: ProfileConfig, paths: Paths) -> dict:
    """Preflight the stage, then call its entry with its declared config and services."""
    from components.pipeline.preflight import preflight  # lazy: imports httpx (teachers); the CLI imports the registry
    stage = get_stage(name)
    preflight(cfg, [name])
    services = {arg: _resolve(ref) for arg, ref in stage.services.items()}

    def run() -> dict:
        return stage.function()(**stage_arguments(stage, cfg), paths=paths, **services)

    result = _resolve(stage.wrap)(run, cfg, paths) if stage.wrap else run()
    builds_base_model = paths.metric("base_model.json") in stage.metrics(paths)
    return result if builds_base_model else with_base_model_warning(stage, result, paths)


def with_base_model_warning(stage: Stage, result: dict, paths: Paths) -> dict:
    """A stage after an unready base model (``pretrain.allow_unready``): its result and metrics file carry the
    base model's ``warning``, and the log says it again."""
    warning = base_model_warning(paths)
    if not warning:
        return result
    print(f"WARNING ({stage.name}): {warning}", flush=True)
    for metric in stage.metrics(paths):
        if metric.is_file():
            write_json(metric, {**json.loads(metric.read_text()), "warning": warning})
    return {**result, "warning": warning}


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)
