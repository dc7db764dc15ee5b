"""Stage entry point: the embedded base model and its tokenizer (receives only the keys it declares)."""
from __future__ import annotations

import shutil
from pathlib import Path

from components.common.threads import use_threads
from components.config import ConfigError, ModelConfig, PretrainConfig
from components.data.base_release import fingerprint, install_release, release_dir, release_status, write_release
from components.paths import Paths
from components.records import write_json


def base_model_stage(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                     max_difficulty: int, paths: Paths) -> dict:
    """Pre-train the embedded base model and its tokenizer, or install the matching shipped release.

    The release is installed only when it was built from the same params and code; a hub model's name is
    recorded instead."""
    use_threads()
    if paths.base_model.exists():
        shutil.rmtree(paths.base_model)
    if model.source == "hub":  # nothing to build: record what the later stages load
        paths.base_model.mkdir(parents=True)
        summary = {"source": "hub", "name": model.name}
        write_json(paths.base_model / "hub_model.json", summary)
        write_json(paths.metric("base_model.json"), summary)
        return summary
    if pretrain.enabled and pretrain.release:  # the shipped base model, when it was built from exactly this
        release = release_dir(pretrain)
        status = release_status(release, fingerprint(model, pretrain, domains, min_difficulty, max_difficulty))
        if status.usable:
            print(f"base model: the shipped release ({status.reason})", flush=True)
            summary = install_release(release, paths.base_model)
            write_json(paths.metric("base_model.json"), summary)
            return summary
        print(f"base model: pre-training, the shipped release does not apply: {status.reason}", flush=True)
    summary = pretrain_base_model(model, pretrain, domains, min_difficulty, max_difficulty, paths.base_model,
                                  checkpoint=paths.runs / "pretrain.ckpt")
    write_json(paths.metric("base_model.json"), summary)
    return summary


def pretrain_base_model(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                        max_difficulty: int, out_dir: Path, checkpoint: Path) -> dict:
    """Pre-train the embedded model and its tokenizer into ``out_dir`` (resumable from ``checkpoint``)."""
    from components.data.base_model import build_base_model, corpus_questions, probe_questions  # lazy: imports torch
    corpus = corpus_questions(pretrain, domains, min_difficulty, max_difficulty)
    probe = probe_questions(pretrain, domains, min_difficulty, max_difficulty, corpus) if pretrain.probe_every else None
    return {**build_base_model(model, pretrain, corpus, out_dir, checkpoint=checkpoint, probe_set=probe),
            "source": "pretrained"}


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
    path = write_release(built, summary, target, fingerprint(model, pretrain, domains, min_difficulty, max_difficulty))
    shutil.rmtree(built, ignore_errors=True)
    return path
