"""Decontamination by benchmark name, and the evaluate stage's refusal to report a task the training data
was not decontaminated against."""
import json
import logging
from pathlib import Path

import pytest

from components.config import DecontaminationConfig, EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.curation.decontamination import NgramIndex
from components.curation.filter_stage import eval_texts
from components.evaluation.evaluate_stage import ContaminationError, contamination_check, evaluate_stage
from components.paths import Paths
from components.records import write_json

EVAL = Path(__file__).resolve().parents[1] / "fixtures/eval"
FILES = {n: str(EVAL / f"{n}.jsonl") for n in ("aime24", "amc23", "math500")}


def test_decontamination_tasks_load_the_evaluation_loaders(tmp_path, monkeypatch):
    gpqa = [{"Record ID": "r1", "Question": "Which of these noble gases has the highest first ionisation energy of all?",
             "Correct Answer": "Helium", "Incorrect Answer 1": "Neon", "Incorrect Answer 2": "Argon",
             "Incorrect Answer 3": "Xenon"}]
    import datasets
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: gpqa)
    cfg = DecontaminationConfig(tasks=["aime24", "amc23", "math500", "gpqa_diamond"], include_heldout=False)
    texts, against = eval_texts(cfg, Paths.for_profile("t", tmp_path), FILES)
    assert {k: v["questions"] for k, v in against.items()} == {"aime24": 30, "amc23": 40, "math500": 500,
                                                               "gpqa_diamond": 1}
    assert against["aime24"]["source"] == FILES["aime24"] and against["gpqa_diamond"]["source"] == "Idavidrein/gpqa"
    index = NgramIndex.build(texts, 8)
    assert index.contaminated("Which of these noble gases has the highest first ionisation energy of all?")
    with pytest.raises(ValueError, match="decontamination.tasks: unknown task 'aime23'"):
        eval_texts(DecontaminationConfig(tasks=["aime23"], include_heldout=False), Paths.for_profile("t", tmp_path))


def test_s1_32b_decontaminates_against_every_reported_benchmark():
    from components.config import load_config
    cfg = load_config(Path(__file__).resolve().parents[2] / "params.yaml", profile="s1-32b")
    assert {"aime24", "aime25", "math500", "gpqa_diamond", "amc23"} <= set(cfg.decontamination.tasks)
    assert set(cfg.evaluate.tasks) <= set(cfg.decontamination.tasks)
    assert cfg.selection.strategy == "s1"


def _report(tmp_path, against):
    paths = Paths.for_profile("t", tmp_path)
    write_json(paths.metric("filter_report.json"), {"decontaminated_against": {n: {} for n in against}})
    return paths


def test_evaluate_refuses_a_task_the_training_data_was_not_decontaminated_against(tmp_path):
    paths = _report(tmp_path, ["heldout", "math500"])
    ev = EvaluateConfig(tasks=["math500", "aime24"], task_files=FILES)
    with pytest.raises(ContaminationError, match=r"\['aime24'\] not in the training data's decontamination"):
        evaluate_stage(ev, EngineConfig(), ModelConfig(), ServeConfig(), paths)
    assert contamination_check(["heldout", "math500"], paths.metric("filter_report.json"), allow=False) == []
    with pytest.raises(ContaminationError, match="none"):  # no filter report: nothing was decontaminated
        contamination_check(["heldout"], tmp_path / "missing.json", allow=False)


def test_allow_contaminated_warns_and_names_the_tasks(tmp_path, caplog):
    paths = _report(tmp_path, ["heldout"])
    with caplog.at_level(logging.WARNING):
        missing = contamination_check(["heldout", "aime24", "amc23"], paths.metric("filter_report.json"), allow=True)
    assert missing == ["aime24", "amc23"] and "CONTAMINATED" in caplog.text
    assert json.loads(paths.metric("filter_report.json").read_text())  # untouched
