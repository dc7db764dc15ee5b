"""Stage entry point: the embedded base model and its tokenizer (receives only the keys it declares)."""
from __future__ import annotations

import shutil

from components.config import ModelConfig, PretrainConfig
from components.paths import Paths
from components.records import write_json


def base_model_stage(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                     max_difficulty: int, paths: Paths) -> dict:
    """Build and pre-train the embedded base model and its tokenizer (or record the hub model's name)."""
    from components.common.threads import use_threads
    from components.data.base_model import build_base_model, corpus_questions, probe_questions
    use_threads()
    if paths.base_model.exists():
        shutil.rmtree(paths.base_model)
    if model.source == "hub":  # nothing to build: record what the later stages load
        paths.base_model.mkdir(parents=True)
        summary = {"source": "hub", "name": model.name}
        write_json(paths.base_model / "hub_model.json", summary)
        write_json(paths.metric("base_model.json"), summary)
        return summary
    corpus = corpus_questions(pretrain, domains, min_difficulty, max_difficulty)
    probe = probe_questions(pretrain, domains, min_difficulty, max_difficulty, corpus) if pretrain.probe_every else None
    summary = build_base_model(model, pretrain, corpus, paths.base_model, checkpoint=paths.runs / "pretrain.ckpt",
                               probe_set=probe)
    write_json(paths.metric("base_model.json"), summary)
    return summary
