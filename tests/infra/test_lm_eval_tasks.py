"""The lm-eval task configs in infra/lm_eval, loaded by lm-eval itself without touching the network.

lm-eval's TaskManager indexes them (every task and group, nothing skipped), each task's full config (includes
followed, ``!function`` utils imported) builds a ``TaskConfig``, the datasets are the ones s1flow's task
loaders read at the same commits, and the docs and grades are s1flow's. Building a task object would
download its dataset, so no task object is built here; tests/serving/test_lm_eval.py runs one end to end.
"""
import json
from pathlib import Path

import pytest

from components.common.grading import grade_response
from components.data.tasks import TASKS, load_task
from components.records import Question

pytest.importorskip("lm_eval")

from lm_eval.config.group import GroupConfig  # noqa: E402
from lm_eval.config.task import TaskConfig  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.tasks._yaml_loader import load_yaml  # noqa: E402
from lm_eval.utils import apply_template  # noqa: E402

TASKS_DIR = Path(__file__).resolve().parents[2] / "infra" / "lm_eval"
EVAL = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
# lm-eval task -> (s1flow task, its dataset config)
S1_TASKS = {"s1_aime24": ("aime24", None), "s1_aime25_i": ("aime25", "AIME2025-I"),
            "s1_aime25_ii": ("aime25", "AIME2025-II"), "s1_math500": ("math500", None),
            "s1_gpqa_diamond": ("gpqa_diamond", "gpqa_diamond"), "s1_hmmt_feb25": ("hmmt_feb25", None),
            "s1_brumo25": ("brumo25", None), "s1_aime26": ("aime26", None)}
GPQA_ROW = {"Record ID": "rec42", "Question": "Which gas is noble?", "Correct Answer": "Neon",
            "Incorrect Answer 1": "Nitrogen", "Incorrect Answer 2": "Oxygen", "Incorrect Answer 3": "Chlorine"}


@pytest.fixture(scope="module")
def manager():
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def _config(manager, name: str) -> dict:
    return load_yaml(manager.task_index[name].yaml_path, resolve_func=True)


def test_every_task_and_group_is_indexed(manager):
    assert sorted(manager.all_subtasks) == sorted(S1_TASKS)
    assert sorted(manager.all_groups) == ["s1", "s1_aime25", "s1_fresh"]
    indexed = {e.yaml_path.name for e in manager.task_index.values() if e.yaml_path}
    assert indexed == {p.name for p in TASKS_DIR.glob("*.yaml")}  # no YAML skipped as unreadable


def test_groups_name_their_tasks(manager):
    s1 = GroupConfig(**_config(manager, "s1"))
    assert s1.task == ["s1_aime24", "s1_aime25", "s1_math500", "s1_gpqa_diamond"]
    aime25 = GroupConfig(**_config(manager, "s1_aime25"))
    assert aime25.task == ["s1_aime25_i", "s1_aime25_ii"]
    assert aime25.aggregate_metric_list[0].weight_by_size  # the accuracy over all 30 problems
    fresh = GroupConfig(**_config(manager, "s1_fresh"))
    assert fresh.task == ["s1_hmmt_feb25", "s1_brumo25", "s1_aime26"]
    assert all(t in manager.task_index for t in s1.task + aime25.task + fresh.task)


@pytest.mark.parametrize("name", sorted(S1_TASKS))
def test_task_configs_build_and_read_s1flows_pinned_datasets(manager, name):
    cfg = TaskConfig(**_config(manager, name))  # unknown keys or unresolvable functions fail here
    task, config = S1_TASKS[name]
    spec = TASKS[task]
    assert (cfg.dataset_path, cfg.test_split, cfg.dataset_kwargs["revision"]) == \
        (spec.hf_dataset, spec.split, spec.revision), "keep the YAML in step with components/data/tasks.py"
    assert cfg.dataset_name == config and config in spec.hf_configs
    assert callable(cfg.process_docs) and callable(cfg.process_results)
    gen = cfg.generation_kwargs
    assert gen["until"] == [] and gen["temperature"] == 0.0
    assert gen["max_thinking_tokens"] == 8192 and gen["final_answer_prefix"] == "Final Answer:"


def test_both_aime25_parts_make_s1flows_aime25(manager):
    rows = {part: [{"question": f"{part} problem {i}", "answer": str(i)} for i in range(3)]
            for part in ("AIME2025-I", "AIME2025-II")}
    docs = [d for name in ("s1_aime25_i", "s1_aime25_ii")
            for d in _config(manager, name)["process_docs"](rows[S1_TASKS[name][1]])]
    want = load_task("aime25", hf_loader=lambda _ds, config, **_: rows[config])
    assert [(d["question"], d["answer"]) for d in docs] == [(q.question, q.answer) for q in want]


def test_gpqa_docs_are_s1flows_shuffled_question_and_letter(manager):
    cfg = _config(manager, "s1_gpqa_diamond")
    doc = cfg["process_docs"]([GPQA_ROW])[0]
    q = load_task("gpqa_diamond", hf_loader=lambda *a, **k: [GPQA_ROW])[0]
    assert (doc["question"], doc["answer"], doc["kind"]) == (q.question, q.answer, "multiple_choice")
    assert apply_template(cfg["doc_to_text"], doc) == q.question  # the prompt is the bare question
    assert f"({q.answer}) Neon" in q.question


@pytest.mark.parametrize("name,gold,response,correct", [
    ("s1_math500", "\\frac{7}{2}", "thinking done\nFinal Answer: 3.5", 1),   # math-verify equivalence
    ("s1_math500", "15", "so \\boxed{15} and Final Answer: 16", 1),           # the boxed answer wins
    ("s1_math500", "1476", "Final Answer: 1475", 0),
    ("s1_aime24", "204", "", 0),
    ("s1_gpqa_diamond", "C", "The answer is (C).", 1),
    ("s1_gpqa_diamond", "C", "Final Answer: (A) or (C)", 0),                # a hedge commits to nothing
])
def test_results_are_graded_as_s1flow_grades(manager, name, gold, response, correct):
    kind = "multiple_choice" if name == "s1_gpqa_diamond" else "math"
    doc = {"id": "q", "question": "?", "answer": gold, "kind": kind}
    got = _config(manager, name)["process_results"](doc, [response])
    assert got == {"exact_match": correct}
    assert grade_response(Question(id="q", source="t", question="?", answer=gold, metadata={"kind": kind}),
                          response)[1] == bool(correct)


@pytest.mark.parametrize("name", ["s1_hmmt_feb25", "s1_brumo25", "s1_aime26"])
def test_the_fresh_contests_docs_are_s1flows_questions(manager, name):
    task = S1_TASKS[name][0]
    rows = [json.loads(line) for line in (EVAL / f"{task}.jsonl").read_text().splitlines()]
    docs = _config(manager, name)["process_docs"](rows)
    want = load_task(task, hf_loader=lambda *a, **k: rows)
    assert [(d["id"], d["question"], d["answer"]) for d in docs] == [(q.id, q.question, q.answer) for q in want]
    assert all(isinstance(d["answer"], str) for d in docs)  # AIME 2026's integer answers become text
