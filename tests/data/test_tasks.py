import json
from datetime import date
from pathlib import Path

import pytest

from components.common.grading import grade_choice, grade_question
from components.data.tasks import TASKS, load_task, possibly_seen

EVAL = Path(__file__).resolve().parents[1] / "fixtures/eval"


@pytest.mark.parametrize("name,n", [("aime24", 30), ("amc23", 40), ("math500", 500)])
def test_local_files_load_into_one_schema(name, n):
    path = EVAL / f"{name}.jsonl"
    qs = load_task(name, path)
    assert len(qs) == n and len({q.id for q in qs}) == n
    assert all(q.question and q.answer and q.source == name for q in qs)
    assert len(load_task(name, path, limit=5)) == 5
    assert grade_question(qs[0], qs[0].answer)


def test_hf_source_and_gpqa_multiple_choice():
    rows = [{"Record ID": "r1", "Question": "Which is a noble gas?", "Correct Answer": "Neon",
             "Incorrect Answer 1": "Iron", "Incorrect Answer 2": "Sodium", "Incorrect Answer 3": "Carbon"}]
    calls = []

    def fake_hub(name, config, split, revision):
        calls.append((name, config, split, revision))
        return rows

    q = load_task("gpqa_diamond", hf_loader=fake_hub)[0]
    assert calls == [("Idavidrein/gpqa", "gpqa_diamond", "train", TASKS["gpqa_diamond"].revision)]
    letter = q.answer
    assert f"({letter}) Neon" in q.question and q.metadata["kind"] == "multiple_choice"
    assert load_task("gpqa_diamond", hf_loader=fake_hub)[0].question == q.question  # deterministic shuffle
    assert grade_question(q, f"({letter})") and grade_question(q, letter)
    assert not grade_question(q, "A" if letter != "A" else "B")
    assert grade_choice("The answer is (C).", "C") is True


def test_unknown_task_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="evaluate.tasks"):
        load_task("mmlu")
    with pytest.raises(FileNotFoundError, match="evaluate.task_files.aime24"):
        load_task("aime24", tmp_path / "nope.jsonl")


def test_aime25_is_both_contests_with_distinct_ids():
    asked = []

    def fake_hub(dataset, config, split, revision):
        asked.append((dataset, config, split))
        return [{"question": f"{config} problem {i}?", "answer": str(i), "id": i + 1} for i in range(15)]

    questions = load_task("aime25", hf_loader=fake_hub)
    assert asked == [("opencompass/AIME2025", "AIME2025-I", "test"), ("opencompass/AIME2025", "AIME2025-II", "test")]
    assert len(questions) == 30 and len({q.id for q in questions}) == 30
    assert questions[15].question == "AIME2025-II problem 0?"


def test_a_task_is_read_at_its_pinned_commit_and_an_unpinned_one_is_refused():
    asked = []

    def fake_hub(dataset, config, split, revision):
        asked.append(revision)
        return [{"problem": "1+1?", "answer": "2"}]

    load_task("aime24", hf_loader=fake_hub)
    assert asked == [TASKS["aime24"].revision] and len(asked[0]) == 40
    assert TASKS["amc23"].revision is None  # no verified commit: a local file or a pin, never the moving main
    with pytest.raises(ValueError, match=r"evaluate.tasks: amc23 reads math-ai/amc23 .* evaluate.task_files.amc23"):
        load_task("amc23", hf_loader=fake_hub)
    assert len(asked) == 1  # refused before any download


FRESH = {"hmmt_feb25": "MathArena/hmmt_feb_2025", "brumo25": "MathArena/brumo_2025", "aime26": "MathArena/aime_2026"}


@pytest.mark.parametrize("name", sorted(FRESH))
def test_fresh_contests_load_matharena_rows_from_a_file_or_the_hub_at_their_commit(name):
    """MathArena's rows (problem_idx, problem, answer; AIME 2026's answer an integer) become s1flow's questions,
    numbered by the contest's problem number, from a local file or the hub at the pinned commit."""
    path = EVAL / f"{name}.jsonl"
    qs = load_task(name, path)
    assert [q.id for q in qs] == [f"{name}-{i}" for i in range(1, 6)]
    assert all(q.source == name and isinstance(q.answer, str) and q.answer for q in qs)
    assert all(grade_question(q, f"\\boxed{{{q.answer}}}") for q in qs)
    rows, asked = [json.loads(line) for line in path.read_text().splitlines()], []

    def fake_hub(dataset, config, split, revision):
        asked.append((dataset, config, split, revision))
        return rows

    assert [(q.id, q.question, q.answer) for q in load_task(name, hf_loader=fake_hub)] == \
        [(q.id, q.question, q.answer) for q in qs]
    spec = TASKS[name]
    assert asked == [(FRESH[name], None, "train", spec.revision)] and len(spec.revision) == 40


def test_hmmt_latex_answers_are_graded_by_equivalence():
    q = {q.id: q for q in load_task("hmmt_feb25", EVAL / "hmmt_feb25.jsonl")}
    assert q["hmmt_feb25-2"].answer == "\\frac{7}{2}" and grade_question(q["hmmt_feb25-2"], "\\boxed{3.5}")
    assert grade_question(q["hmmt_feb25-5"], "\\boxed{\\sqrt{12}}")
    assert not grade_question(q["hmmt_feb25-5"], "\\boxed{\\sqrt{13}}")


def test_a_task_public_before_the_base_models_release_is_possibly_seen():
    qwen25 = date(2024, 9, 19)
    assert all(spec.public_since for spec in TASKS.values())  # every benchmark says when it became public
    assert [n for n in TASKS if possibly_seen(n, qwen25)] == ["aime24", "math500", "amc23", "gpqa_diamond"]
    assert not any(possibly_seen(n, qwen25) for n in FRESH)  # held after Qwen2.5's release
    assert possibly_seen("aime25", date(2025, 6, 1)) and not possibly_seen("aime25", qwen25)
    assert not possibly_seen("aime24", None)  # no release date given: nothing flagged
    assert not possibly_seen("heldout", qwen25)  # made by the run
