"""Stage entry point: the embedded base model and its tokenizer (receives only the keys it declares).

A pre-training that ends without passing its skill probe is not a base model the recipe can use: the stage
fails with :class:`BaseModelNotReady` (per-domain scores, what the model writes, the seeds, what to do). The
model is kept under ``runs/<profile>/unready-base`` with the config's fingerprint, so a rerun of the same
config fails at once, or with ``pretrain.allow_unready: true`` installs it and goes on; its summary then has
``ready: false`` and a ``warning`` that every later stage, the results page and the MLflow run repeat
(:func:`components.data.base_model_readiness.base_model_warning`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from components.common.threads import use_threads
from components.config import ConfigError, ModelConfig, PretrainConfig
from components.data.base_release import fingerprint, install_release, release_dir, release_status, write_release
from components.paths import Paths
from components.records import write_json

UNREADY_BUILD = "unready-base"  # under paths.runs: the last pre-training that missed its probe


class BaseModelNotReady(RuntimeError):
    """Pre-training ended without passing its skill probe, and ``pretrain.allow_unready`` is false."""


def unready_build_dir(paths: Paths) -> Path:
    return paths.runs / UNREADY_BUILD


def base_model_stage(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                     max_difficulty: int, paths: Paths) -> dict:
    """Pre-train the embedded base model and its tokenizer, or install the matching shipped release.

    The release is installed only when it was built from the same params and code; a hub model's name is
    recorded instead. A pre-training that misses its probe raises :class:`BaseModelNotReady` unless
    ``pretrain.allow_unready`` (see the module docstring)."""
    use_threads()
    if paths.base_model.exists():
        shutil.rmtree(paths.base_model)
    paths.metric("base_model.json").unlink(missing_ok=True)  # a failed stage leaves no summary behind
    if model.source == "hub":  # nothing to build: record what the later stages load
        paths.base_model.mkdir(parents=True)
        summary = {"source": "hub", "name": model.name, "ready": True}
        write_json(paths.base_model / "hub_model.json", summary)
        write_json(paths.metric("base_model.json"), summary)
        return summary
    wanted = fingerprint(model, pretrain, domains, min_difficulty, max_difficulty)
    if pretrain.enabled and pretrain.release:  # the shipped base model, when it was built from exactly this
        release = release_dir(pretrain)
        status = release_status(release, wanted)
        if status.usable:
            print(f"base model: the shipped release ({status.reason})", flush=True)
            summary = {**install_release(release, paths.base_model), "ready": True}
            write_json(paths.metric("base_model.json"), summary)
            return summary
        print(f"base model: pre-training, the shipped release does not apply: {status.reason}", flush=True)
    kept = unready_build_dir(paths)
    if gated(pretrain) and release_status(kept, wanted).usable:  # this config's pre-training already missed
        print(f"base model: the pre-training kept in {kept} (same params and code) did not pass its probe",
              flush=True)
        summary = {**install_release(kept, paths.base_model), "source": "unready-build"}
    else:
        summary = pretrain_base_model(model, pretrain, domains, min_difficulty, max_difficulty, paths.base_model,
                                      checkpoint=paths.runs / "pretrain.ckpt")
        if gated(pretrain) and not summary.get("probe_passed"):
            write_release(paths.base_model, summary, kept, wanted)  # ~17 minutes of work: never thrown away
    if gated(pretrain) and not summary.get("probe_passed"):
        if not pretrain.allow_unready:
            shutil.rmtree(paths.base_model, ignore_errors=True)
            raise BaseModelNotReady(not_ready_message(summary, model, pretrain, kept))
        summary = {**summary, "ready": False, "warning": unready_warning(summary, model, pretrain)}
        print(f"WARNING: {summary['warning']}", flush=True)
    else:
        summary = {**summary, "ready": True}
    write_json(paths.metric("base_model.json"), summary)
    return summary


def gated(pretrain: PretrainConfig) -> bool:
    """Whether the pre-training has a skill gate to pass (a probe schedule, and pre-training at all)."""
    return pretrain.enabled and bool(pretrain.probe_every)


def _skills(summary: dict) -> str:
    from components.data.skill_probe import SkillReport
    probe = summary.get("skill_probe")
    return SkillReport.from_dict(probe).describe() if probe else "per-domain scores not recorded"


def not_ready_message(summary: dict, model: ModelConfig, pretrain: PretrainConfig, kept: Path) -> str:
    """What went wrong, on which seeds, what the final model scores and writes, and what to do."""
    release = f" ({pretrain.release})" if pretrain.release else ""
    return "\n".join([
        f"base model not ready: pre-training ran {summary.get('steps')} steps (pretrain.steps {pretrain.steps}) "
        f"and its skill probe never reached pretrain.probe_target {pretrain.probe_target} "
        f"(pretrain.probe_gate {pretrain.probe_gate}); probes [step, score]: {summary.get('probes')}",
        f"seeds: pretrain.seed {pretrain.seed}, model.seed {model.seed}",
        f"final model, {_skills(summary)}",
        f"the model is kept in {kept}: rerun with these params and it is installed, not pre-trained again",
        "what to do: raise pretrain.steps; or use the shipped release" + release + " by keeping the committed "
        "pretrain params; or try another pretrain.seed; or set pretrain.allow_unready: true to go on with this "
        "model deliberately (every later stage's summary, the results page and the MLflow run then carry a "
        "warning)"])


def unready_warning(summary: dict, model: ModelConfig, pretrain: PretrainConfig) -> str:
    """One line for every later summary, the results page and the MLflow run."""
    probe = summary.get("skill_probe") or {}
    scores = ", ".join(f"{d} {a:.2f}" for d, a in sorted(probe.get("accuracy", {}).items())) or "not recorded"
    return (f"base model not ready: its pre-training ({summary.get('steps')} steps, pretrain.seed {pretrain.seed}, "
            f"model.seed {model.seed}) never passed the skill probe (pretrain.probe_target {pretrain.probe_target}, "
            f"{pretrain.probe_gate}; final per-domain accuracy {scores}); pretrain.allow_unready let the pipeline go "
            "on, so this run's results come from a base model without the skill the recipe builds on")


def pretrain_base_model(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                        max_difficulty: int, out_dir: Path, checkpoint: Path) -> dict:
    """Pre-train the embedded model and its tokenizer into ``out_dir`` (resumable from ``checkpoint``)."""
    from components.data.base_model import build_base_model, corpus_questions, probe_questions  # lazy: imports torch
    corpus = corpus_questions(pretrain, domains, min_difficulty, max_difficulty)
    probe = probe_questions(pretrain, domains, min_difficulty, max_difficulty, corpus) if pretrain.probe_every else None
    summary = {**build_base_model(model, pretrain, corpus, out_dir, checkpoint=checkpoint, probe_set=probe),
               "source": "pretrained"}
    if gated(pretrain) and not summary.get("probe_passed"):  # the diagnosis: what each domain scores and writes
        from components.data.skill_probe import probe_model_dir
        summary["skill_probe"] = probe_model_dir(out_dir, probe).as_dict()
    return summary


def release_base_model(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                       max_difficulty: int, paths: Paths) -> Path:
    """Pre-train (resumable under ``paths.runs``) and write the release ``pretrain.release`` names, which the
    base-model stage then installs for this config instead of pre-training."""
    target = release_dir(pretrain)
    if model.source == "hub" or not pretrain.enabled or target is None:
        raise ConfigError("pretrain.release: a release needs model.source 'embedded', pretrain.enabled true and "
                          "pretrain.release set to the directory it goes to (e.g. releases/tiny-base)")
    built = paths.runs / "release-build"
    shutil.rmtree(built, ignore_errors=True)
    summary = pretrain_base_model(model, pretrain, domains, min_difficulty, max_difficulty, built,
                                  checkpoint=paths.runs / "release.ckpt")
    if gated(pretrain) and not summary.get("probe_passed") and not pretrain.allow_unready:
        kept = unready_build_dir(paths)  # never ship a model without the skill; never throw the work away
        write_release(built, summary, kept, fingerprint(model, pretrain, domains, min_difficulty, max_difficulty))
        shutil.rmtree(built, ignore_errors=True)
        raise BaseModelNotReady(not_ready_message(summary, model, pretrain, kept))
    path = write_release(built, summary, target, fingerprint(model, pretrain, domains, min_difficulty, max_difficulty))
    shutil.rmtree(built, ignore_errors=True)
    return path
