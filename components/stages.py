"""Stage entry points: read inputs from files, call the pure components, write outputs.

``dvc repro`` (through ``s1flow stage NAME``) and the Prefect flow both call
these, so both produce the same artefacts at the same paths.

    run_stage("collect", cfg, Paths.for_profile(cfg.name))
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from components.config import ProfileConfig
from components.records import (Example, Question, Trace, iter_jsonl, read_jsonl, write_json,
                                write_jsonl)


@dataclass(frozen=True)
class Paths:
    root: Path
    profile: str

    @classmethod
    def for_profile(cls, profile: str, root: str | Path = ".") -> "Paths":
        return cls(Path(root), profile)

    def _p(self, kind: str, name: str) -> Path:
        return self.root / kind / self.profile / name

    @property
    def base_model(self) -> Path: return self._p("models", "base")
    @property
    def sft_model(self) -> Path: return self._p("models", "sft")
    @property
    def pool(self) -> Path: return self._p("data", "pool.jsonl")
    @property
    def heldout(self) -> Path: return self._p("data", "heldout.jsonl")
    @property
    def traces(self) -> Path: return self._p("data", "traces.jsonl")
    @property
    def filtered(self) -> Path: return self._p("data", "filtered.jsonl")
    @property
    def selected(self) -> Path: return self._p("data", "s1k.jsonl")
    @property
    def sft_tokens(self) -> Path: return self._p("data", "sft_tokens.jsonl")
    @property
    def eval_samples(self) -> Path: return self._p("data", "eval_samples.jsonl")
    @property
    def sft_work(self) -> Path: return self._p("runs", "sft")
    @property
    def quarantine(self) -> Path: return self._p("data", "quarantine.jsonl")
    def distill_shards(self, fingerprint: str) -> Path: return self._p("runs", f"distill/{fingerprint}")
    def metric(self, name: str) -> Path: return self._p("metrics", name)
    def plot(self, name: str) -> Path: return self._p("plots", name)


def base_model_ref(cfg: ProfileConfig, paths: Paths) -> str:
    """Where the base model loads from: the built directory, or the hub id / local path in params."""
    return cfg.model.name if cfg.model.source == "hub" else str(paths.base_model)


def _threads() -> None:
    torch.set_num_threads(max(1, int(os.environ.get("S1FLOW_THREADS", os.cpu_count() or 1))))


def _engine(path: Path | str, cfg: ProfileConfig):
    from components.inference.engines import build_engine
    extra = {"tensor_parallel_size": cfg.evaluate.tensor_parallel_size} if cfg.evaluate.engine == "vllm" else {}
    return build_engine(cfg.evaluate.engine, str(path), cfg.model.dtype, batch_size=cfg.evaluate.batch_size,
                        unlimited_thinking_tokens=cfg.evaluate.unlimited_thinking_tokens, **extra)


def base_model_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from components.base_model import build_base_model
    _threads()
    if paths.base_model.exists():
        shutil.rmtree(paths.base_model)
    if cfg.model.source == "hub":  # nothing to build: record what the later stages load
        paths.base_model.mkdir(parents=True)
        summary = {"source": "hub", "name": cfg.model.name}
        write_json(paths.base_model / "hub_model.json", summary)
        write_json(paths.metric("base_model.json"), summary)
        return summary
    summary = build_base_model(cfg, paths.base_model, checkpoint=paths.root / "runs" / cfg.name / "pretrain.ckpt")
    write_json(paths.metric("base_model.json"), summary)
    return summary


def collect_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from components.pool import generate_heldout
    from components.pool_sources import load_pool
    result = load_pool(cfg.pool)
    ev = cfg.evaluate
    heldout = generate_heldout(ev.test_seed, ev.test_size, cfg.pool.domains, ev.test_min_difficulty,
                               ev.test_max_difficulty)
    write_jsonl(paths.pool, result.questions)
    write_jsonl(paths.quarantine, result.quarantined)
    write_jsonl(paths.heldout, heldout)
    report = {**result.report, "pool": len(result.questions), "heldout": len(heldout),
              "malformed": sum(1 for q in result.questions if q.metadata.get("malformed"))}
    write_json(paths.metric("collect_report.json"), report)
    return report


def distill_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from components.distillation import distill_pool, merged_traces, teacher_fingerprint
    questions = read_jsonl(paths.pool, Question)
    shard_dir = paths.distill_shards(teacher_fingerprint(cfg.teacher))
    report = distill_pool(questions, cfg.teacher, shard_dir)
    write_jsonl(paths.traces, merged_traces(questions, shard_dir))
    write_json(paths.metric("distill_report.json"), report)
    return report


def _eval_texts(cfg: ProfileConfig, paths: Paths) -> list[str]:
    texts = [d["question"] for d in iter_jsonl(paths.heldout)] if cfg.decontamination.include_heldout else []
    for src in cfg.decontamination.eval_sets:
        if not Path(src).exists():
            raise FileNotFoundError(f"decontamination.eval_sets: {src} not found; give JSONL paths with a 'problem' "
                                    "or 'question' field")
        texts += [d.get("problem") or d.get("question", "") for d in iter_jsonl(src)]
    return texts


def student_engine(model: str, cfg: ProfileConfig):
    """A student for the difficulty filter (built inside a Ray Data actor)."""
    engine = _engine(model, cfg)
    engine.batch_size = cfg.difficulty.batch_size
    return engine


def filter_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from functools import partial

    from transformers import AutoTokenizer

    from components.curation import classify_domains, quality_and_decontamination, student_solves
    from components.filters.decontamination import NgramIndex
    from components.filters.difficulty import trace_length
    from components.progress import progress_bar
    _threads()
    traces = {t.question_id: t for t in read_jsonl(paths.traces, Trace)}
    examples = [Example(question=q, trace=traces[q.id]) for q in read_jsonl(paths.pool, Question) if q.id in traces]
    index = NgramIndex.build(_eval_texts(cfg, paths), cfg.decontamination.ngram)
    counts = {"pool": len(examples)}
    survivors, dropped = quality_and_decontamination(examples, cfg.quality, index)
    reasons = Counter(ex.drop_reason for ex in dropped)
    counts["after_quality"] = len(examples) - sum(n for r, n in reasons.items() if r != "contaminated")
    counts["after_decontamination"] = len(survivors)
    if cfg.difficulty.enabled and survivors:
        for student in cfg.difficulty.students:
            ref = base_model_ref(cfg, paths) if student == "base" else student
            model = str(Path(ref).resolve()) if Path(ref).exists() else ref  # Ray actors have another cwd
            with progress_bar(f"difficulty: {student} attempts", total=len(survivors)) as advance:
                solved = student_solves(survivors, partial(student_engine, model, cfg), model, cfg.difficulty,
                                        progress=advance)
            for ex in survivors:
                ex.student_correct[student] = solved[ex.question.id]
        hard = [ex for ex in survivors if not any(ex.student_correct.values())]
        reasons["solved_by_student"] += len(survivors) - len(hard)
        survivors = hard
    counts["after_difficulty"] = len(survivors)
    tokenizer = AutoTokenizer.from_pretrained(base_model_ref(cfg, paths))
    for ex in survivors:
        ex.trace_tokens = trace_length(tokenizer, ex)
    domain_outcome = classify_domains(survivors, cfg.domain)
    write_jsonl(paths.filtered, survivors)
    reasons["kept"] = len(survivors)
    report = {"counts": counts, "drop_reasons": dict(reasons), "domain_classifier": cfg.domain.classifier,
              **({"domain_outcome": dict(domain_outcome)} if domain_outcome else {})}
    write_json(paths.metric("filter_report.json"), report)
    return report


def select_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from components.selection import select
    from components.selection_report import plot_selection_report, selection_report
    examples = read_jsonl(paths.filtered, Example)
    s = cfg.selection
    chosen = select(examples, s.strategy, s.size, s.seed)
    write_jsonl(paths.selected, chosen)
    filter_report = json.loads(paths.metric("filter_report.json").read_text())
    report = selection_report(filter_report, chosen, len(examples), s.strategy)
    write_json(paths.metric("selection_report.json"), report)
    plot_selection_report(report, paths.plot("selection_report.png"))
    return {k: v for k, v in report.items() if k != "trace_tokens"}


def tokenize_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from transformers import AutoTokenizer

    from components.formatting import tokenize_dataset
    tokenizer = AutoTokenizer.from_pretrained(base_model_ref(cfg, paths))
    rows = [(e.question.id, e.question.question, e.trace.thinking, e.trace.answer)
            for e in read_jsonl(paths.selected, Example)]
    examples, report = tokenize_dataset(tokenizer, rows, cfg.sft.block_size)
    write_jsonl(paths.sft_tokens, [asdict(e) for e in examples])
    write_json(paths.metric("tokenize_report.json"), asdict(report))
    if report.too_long:
        print(f"warning: {len(report.too_long)} examples exceed sft.block_size={cfg.sft.block_size} and were "
              f"left out (longest {report.max_length} tokens); raise sft.block_size to keep them")
    return asdict(report)


def memory_plan(cfg: ProfileConfig, paths: Paths) -> dict:
    """Print the ZeRO-3 memory estimate for this run; on CUDA, refuse a plan that cannot fit."""
    from transformers import AutoConfig

    from components.memory import check_fits, plan_dict, sft_memory_plan
    world = cfg.sft.world_size
    per_node = min(world, 8)
    plan = sft_memory_plan(AutoConfig.from_pretrained(base_model_ref(cfg, paths)), cfg.sft,
                           gpus_per_node=per_node, nodes=-(-world // per_node))
    print(f"memory plan: {plan.describe()}")
    if torch.cuda.is_available():
        check_fits(plan, torch.cuda.get_device_properties(0).total_memory / 2**30)
    return plan_dict(plan)


def sft_fingerprint(cfg: ProfileConfig, paths: Paths) -> str:
    """What a training run depends on: SFT params, the tokenized data, the base model. Checkpoints live
    under it, so a run resumes only checkpoints of the same training (never another selection's)."""
    from components.lineage import content_hash
    base = Path(base_model_ref(cfg, paths))
    if base.is_dir():  # config + weight file names and sizes: cheap even for 32B checkpoints
        files = sorted((f.name, f.stat().st_size) for f in base.iterdir() if f.is_file())
        base_id = json.dumps([files, (base / "config.json").read_text() if (base / "config.json").exists() else ""])
    else:
        base_id = str(base)
    state = [cfg.sft.model_dump(mode="json", exclude={"checkpoint_uri"}), content_hash(paths.sft_tokens), base_id]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]


def train_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from components.formatting import TokenizedExample
    from components.sft import train_sft
    _threads()
    examples = [TokenizedExample(**d) for d in iter_jsonl(paths.sft_tokens)]
    plan = memory_plan(cfg, paths)  # fails fast, with the numbers, when the config cannot fit
    fingerprint = sft_fingerprint(cfg, paths)
    work = paths.sft_work / fingerprint
    uri = cfg.sft.checkpoint_uri
    sft = cfg.sft.model_copy(update={"checkpoint_uri": f"{uri.rstrip('/')}/{fingerprint}" if uri else None})
    if sft.launcher == "ray":
        from components.ray_sft import train_with_ray
        summary = train_with_ray(sft, base_model_ref(cfg, paths), paths.sft_tokens, paths.sft_model, work,
                                 cfg.model.dtype)
    else:
        summary = train_sft(sft, base_model_ref(cfg, paths), examples, paths.sft_model, work, cfg.model.dtype)
    summary["work_dir"] = str(work)
    summary["memory_plan"] = plan
    write_json(paths.metric("train.json"), summary)
    return summary


def model_hash(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def eval_questions(cfg: ProfileConfig, paths: Paths) -> dict[str, list[Question]]:
    from components.tasks import load_task
    ev, out = cfg.evaluate, {}
    for name in ev.tasks:
        if name == "heldout":
            out[name] = read_jsonl(paths.heldout, Question)[: ev.task_limit]
        else:
            out[name] = load_task(name, ev.task_files.get(name), ev.task_limit)
    return out


def evaluate_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    """Sweep every task in evaluate.tasks; the first is the headline (top-level keys, plot)."""
    from components.evaluate import base_model_accuracy, evaluate_sweep, plot_scaling
    from components.evaluate.provenance import provenance
    _threads()
    digest = model_hash(paths.sft_model)
    per_task, all_samples = {}, []
    base = _engine(base_model_ref(cfg, paths), cfg)
    sft = _engine(paths.sft_model, cfg) if cfg.evaluate.via == "in_process" else None  # once, for every task
    for name, questions in eval_questions(cfg, paths).items():
        base_acc = base_model_accuracy(base, questions, cfg.difficulty.max_new_tokens)
        if cfg.evaluate.via == "serve":
            from components.evaluate.served import evaluate_via_serve
            report, samples = evaluate_via_serve(cfg, paths.sft_model, questions,
                                                 paths.root / "runs" / cfg.name / f"serve_samples_{name}.jsonl", digest)
        else:
            report, gens = evaluate_sweep(sft, questions, cfg.evaluate)
            samples = [{**g.model_dump(), "seed": cfg.evaluate.seed} for g in gens]
        report.update(base_accuracy=base_acc, questions=len(questions))
        per_task[name] = report
        all_samples += [{**r, "task": name} for r in samples]
    headline = per_task[cfg.evaluate.tasks[0]]
    report = {**headline, "task": cfg.evaluate.tasks[0], "tasks": per_task, "model_hash": digest,
              "engine": cfg.evaluate.engine, "provenance": provenance(cfg, digest)}
    write_jsonl(paths.eval_samples, all_samples)
    write_json(paths.metric("eval.json"), report)
    write_jsonl(paths.plot("scaling.jsonl"), [
        {"budget": p["budget"], "avg_thinking_tokens": round(p["avg_thinking_tokens"], 2),
         "accuracy": p["accuracy"]} for p in report["points"]])
    plot_scaling(report, paths.plot("scaling.png"), title=f"Budget forcing on {report['task']}")
    return report


def register_stage(cfg: ProfileConfig, paths: Paths) -> dict:
    from components.tracking import log_pipeline_run
    ev = json.loads(paths.metric("eval.json").read_text())
    train = json.loads(paths.metric("train.json").read_text())
    metrics = {f"accuracy_budget_{b}": a for b, a in ev["accuracy_by_budget"].items()}
    metrics.update(control=ev["control"], scaling=ev["scaling"], performance=ev["performance"],
                   base_accuracy=ev["base_accuracy"], accuracy_unlimited=ev["unlimited"]["accuracy"],
                   train_loss=train["train_loss"], sft_seconds=train["seconds"],
                   **{f"sft_{k}": train[k] for k in ("tokens_per_second", "padding_efficiency", "mfu")
                      if train.get(k) is not None})
    distill = paths.metric("distill_report.json")
    if distill.exists():
        d = json.loads(distill.read_text())
        metrics.update({f"distill_{k}": d[k] for k in ("done", "failed", "calls", "prompt_tokens",
                                                       "completion_tokens", "cost_usd")})
    artifacts = [paths.plot("scaling.png"), paths.metric("eval.json"), paths.metric("filter_report.json"),
                 paths.metric("selection_report.json"), paths.plot("selection_report.png"), paths.metric("train.json"),
                 paths.metric("collect_report.json"), paths.metric("distill_report.json")]  # those that exist
    from components.lineage import input_hashes
    data = input_hashes(paths.root, [str(p.relative_to(paths.root)) for p in
                                     (paths.pool, paths.traces, paths.selected, paths.sft_tokens, paths.heldout,
                                      paths.base_model)])
    tags = {"model_hash": ev.get("model_hash", ""), **{f"dvc.{k}": v for k, v in data.items()},
            **{f"eval.{k}": str(v) for k, v in ev.get("provenance", {}).items()}}
    dataset = str(paths.selected.relative_to(paths.root))
    version_tags = {"dataset": dataset, "dataset_dvc_md5": data.get(dataset, ""),
                    "selection.strategy": cfg.selection.strategy}
    history = Path(train.get("work_dir", paths.sft_work)) / "loss_history.json"
    steps = json.loads(history.read_text()) if history.exists() else []
    info = log_pipeline_run(cfg, paths.root, metrics, artifacts, paths.sft_model, tags=tags, step_metrics=steps,
                            version_tags=version_tags)
    write_json(paths.metric("mlflow_run.json"), info)
    return info


STAGES: dict[str, Callable[[ProfileConfig, Paths], dict]] = {
    "base-model": base_model_stage,
    "collect": collect_stage,
    "distill": distill_stage,
    "filter": filter_stage,
    "select": select_stage,
    "tokenize": tokenize_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
    "register": register_stage,
}


STAGE_OUTPUTS: dict[str, Callable[[Paths], list[Path]]] = {
    "base-model": lambda p: [p.base_model],
    "collect": lambda p: [p.pool, p.heldout, p.quarantine],
    "distill": lambda p: [p.traces],
    "filter": lambda p: [p.filtered],
    "select": lambda p: [p.selected],
    "tokenize": lambda p: [p.sft_tokens],
    "train": lambda p: [p.sft_model],
    "evaluate": lambda p: [p.metric("eval.json"), p.eval_samples],
    "register": lambda p: [p.metric("mlflow_run.json")],
}


def _files_signature(path: Path) -> list:
    if not path.exists():
        return [str(path), "missing"]
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


# The code each stage depends on: the components/ entries of the stages' `deps:` in dvc.yaml (tested equal).
STAGE_CODE: dict[str, list[str]] = {
    "base-model": ["base_model.py", "tokenizer.py", "problems.py"],
    "collect": ["pool.py", "pool_sources.py", "problems.py"],
    "distill": ["teachers", "distillation.py"],
    "filter": ["filters", "curation.py"],
    "select": ["selection.py", "selection_report.py"],
    "tokenize": ["formatting.py"],
    "train": ["sft.py", "packing.py", "checkpoints.py", "ray_sft.py", "memory.py", "throughput.py"],
    "evaluate": ["evaluate", "tasks.py", "inference"],
    "register": ["tracking.py", "lineage.py"],
}


def code_digest(name: str) -> str:
    """The stage's own code: editing it invalidates that stage's cached result (and what follows)."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for entry in STAGE_CODE[name]:
        target = root / entry
        for f in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def outputs_signature(name: str, paths: Paths) -> str:
    """What this stage's outputs look like on disk now (paths, sizes, mtimes)."""
    state = [_files_signature(o) for o in STAGE_OUTPUTS[name](paths)]
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:24]


# The params each stage reads: the same lists as the stages' `params:` in dvc.yaml (a test keeps them equal).
STAGE_PARAMS: dict[str, list[str]] = {
    "base-model": ["model", "pretrain", "pool.domains", "pool.min_difficulty", "pool.max_difficulty"],
    "collect": ["pool", "evaluate.test_size", "evaluate.test_seed", "evaluate.test_min_difficulty",
                "evaluate.test_max_difficulty"],
    "distill": ["teacher"],
    "filter": ["quality", "decontamination", "difficulty", "domain"],
    "select": ["selection"],
    "tokenize": ["sft.block_size"],
    "train": ["sft"],
    "evaluate": ["evaluate"],
    "register": ["tracking"],
}


def stage_params(name: str, cfg: ProfileConfig) -> dict:
    data, out = cfg.model_dump(mode="json"), {}
    for key in STAGE_PARAMS[name]:
        node = data
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def stage_cache_key(name: str, cfg: ProfileConfig, upstream: str = "") -> str:
    """Identifies one stage's work: its params, the code, and the upstream stage's outputs."""
    state = [name, stage_params(name, cfg), code_digest(name), upstream]
    return f"s1flow-{cfg.name}-{name}-" + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]


class OutputLedger:
    """The outputs a stage left on disk when it finished under a cache key (runs/<profile>/ledger.json).
    A cached result is trusted only while the disk still holds those outputs: after they were removed,
    changed, or overwritten by a run with other params, the stage runs again."""

    def __init__(self, paths: Paths):
        self.paths, self.file = paths, paths.root / "runs" / paths.profile / "ledger.json"

    def _read(self) -> dict:
        return json.loads(self.file.read_text()) if self.file.exists() else {}

    def stale(self, name: str, key: str) -> bool:
        return self._read().get(key) != outputs_signature(name, self.paths)

    def record(self, name: str, key: str) -> None:
        write_json(self.file, {**self._read(), key: outputs_signature(name, self.paths)})


def run_stage(name: str, cfg: ProfileConfig, paths: Paths) -> dict:
    from components.preflight import preflight
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    preflight(cfg, [name])
    return STAGES[name](cfg, paths)
