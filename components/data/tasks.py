"""Evaluation task loaders: one record schema (:class:`Question`) for every benchmark.

Each task loads from a local JSONL file when one is given (the embedded
profile, tests) or from its Hugging Face dataset (the real profile). GPQA
Diamond becomes a multiple-choice question with options shuffled
deterministically per question; its answer is the letter.

They live in ``data`` (not ``evaluation``) because two stages read them: the
evaluate stage scores on them, and the filter stage decontaminates the
training pool against the same questions (``decontamination.tasks``).

Each task carries the day its questions became public (``public_since``: the
contest's day, or a dataset's release). A base model released after that day
may have read them in pre-training: :func:`possibly_seen` says so, and the
results page flags the task. HMMT February 2025, BRUMO 2025 and AIME 2026 were
held after Qwen2.5's release (19 September 2024): fresh contests for the s1 models.

    questions = load_task("math500", path="data/eval/math500.jsonl", limit=100)
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from components.records import Question, iter_jsonl


@dataclass(frozen=True)
class TaskSpec:
    hf_dataset: str
    hf_configs: tuple[Optional[str], ...]  # the dataset's configs that make up the benchmark, read in order
    split: str
    question_field: str
    answer_field: str
    kind: str = "math"  # math | multiple_choice
    revision: Optional[str] = None  # the dataset's hub commit; None: not pinned, never downloaded
    public_since: Optional[date] = None  # the day its questions became public: the contest's, or the dataset's release


# Each benchmark is read at one commit of its dataset, so a score always refers to the same questions.
# MathArena's contest sets (problem_idx, problem, answer; split train) are CC BY-NC-SA 4.0.
TASKS: dict[str, TaskSpec] = {
    "aime24": TaskSpec("HuggingFaceH4/aime_2024", (None,), "train", "problem", "answer",
                       revision="2fe88a2f1091d5048c0f36abc874fb997b3dd99a", public_since=date(2024, 2, 7)),
    # AIME 2025 is two contests of 15 problems each (I and II): the benchmark is both
    "aime25": TaskSpec("opencompass/AIME2025", ("AIME2025-I", "AIME2025-II"), "test", "question", "answer",
                       revision="a6ad95f611d72cf628a80b58bd0432ef6638f958", public_since=date(2025, 2, 12)),
    # MATH's test problems (Hendrycks et al., released 2021-03-05); the 500 are OpenAI's PRM800K subset
    "math500": TaskSpec("HuggingFaceH4/MATH-500", (None,), "test", "problem", "answer",
                        revision="ff5b20257d8185524591543f8ff5993951537bb8", public_since=date(2021, 3, 5)),
    "amc23": TaskSpec("math-ai/amc23", (None,), "test", "question", "answer", public_since=date(2023, 11, 14)),
    # GPQA (Rein et al., released 2023-11-20)
    "gpqa_diamond": TaskSpec("Idavidrein/gpqa", ("gpqa_diamond",), "train", "Question", "Correct Answer",
                             kind="multiple_choice", revision="633f5ee89ab8ad4522a9f850766b73f62147ffdd",
                             public_since=date(2023, 11, 20)),
    # Contests held after Qwen2.5's release (30 problems each; HMMT and BRUMO answers are LaTeX, AIME integers)
    "hmmt_feb25": TaskSpec("MathArena/hmmt_feb_2025", (None,), "train", "problem", "answer",
                           revision="6fdc4277120810ff75aa22d2d5489b91f7a262a1", public_since=date(2025, 2, 15)),
    "brumo25": TaskSpec("MathArena/brumo_2025", (None,), "train", "problem", "answer",
                        revision="6de9bc0987f5710c6376ee980e1483dbeb55cfda", public_since=date(2025, 4, 5)),
    "aime26": TaskSpec("MathArena/aime_2026", (None,), "train", "problem", "answer",  # I and II together
                       revision="10b4e45b7a503075d4da8a0d57916a4f06ce6bd2", public_since=date(2026, 2, 6)),
}


def possibly_seen(name: str, base_released: Optional[date]) -> bool:
    """Whether task ``name``'s questions were public before the base model's release (``base_released``), so
    its pre-training may have read them. False for a task with no date (``heldout``: made by the run) and when
    the release date is not given."""
    spec = TASKS.get(name)
    return bool(spec and spec.public_since and base_released and spec.public_since < base_released)


def unpinned_task(name: str) -> Optional[str]:
    """Why task ``name`` cannot be read from the hub (its dataset has no pinned commit), or None."""
    spec = TASKS[name]
    if spec.revision:
        return None
    return (f"{name} reads {spec.hf_dataset} from the hub with no pinned commit: give evaluate.task_files.{name} "
            f"a local JSONL, or set the dataset's commit SHA as its revision in TASKS (components/data/tasks.py)")
LETTERS = "ABCD"


def _field(row: dict, *names: str) -> Any:
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    raise KeyError(f"none of the fields {names} in row with keys {sorted(row)}")


def _multiple_choice(row: dict, qid: str) -> tuple[str, str]:
    correct = str(_field(row, "Correct Answer")).strip()
    options = [correct] + [str(row[f"Incorrect Answer {i}"]).strip() for i in (1, 2, 3)]
    rng = random.Random(int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16))
    rng.shuffle(options)
    body = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    text = f"{str(_field(row, 'Question')).strip()}\n\n{body}\n\nAnswer with the letter of the correct option."
    return text, LETTERS[options.index(correct)]


def _records(name: str, spec: TaskSpec, rows: Iterable[dict]) -> list[Question]:
    out, seen = [], set()
    for i, row in enumerate(rows):
        number = row.get("problem_idx")  # MathArena's contest sets number their problems
        qid = str(row.get("id") or row.get("Record ID") or f"{name}-{i if number is None else number}")
        if qid in seen:  # ids repeat across a benchmark's parts (each contest numbers its own problems)
            qid = f"{name}-{i}"
        seen.add(qid)
        if spec.kind == "multiple_choice":
            text, answer = _multiple_choice(row, qid)
        else:
            text = str(_field(row, spec.question_field, "problem", "question", "Problem"))
            answer = str(_field(row, spec.answer_field, "answer", "Answer"))
        meta = {k: row[k] for k in ("subject", "level") if k in row}
        out.append(Question(id=qid, source=name, question=text, answer=answer,
                            metadata={"kind": spec.kind, **meta}))
    return out


def load_task(name: str, path: Optional[str | Path] = None, limit: Optional[int] = None,
              hf_loader: Optional[Callable[..., Iterable[dict]]] = None) -> list[Question]:
    """Load ``name`` from ``path`` (JSONL) or its Hugging Face dataset."""
    if name not in TASKS:
        raise ValueError(f"evaluate.tasks: unknown task {name!r}; choose from {sorted(TASKS)} or 'heldout'")
    spec = TASKS[name]
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"evaluate.task_files.{name}: {path} not found")
        rows: Iterable[dict] = iter_jsonl(path)
    else:
        if (problem := unpinned_task(name)) is not None:
            raise ValueError(f"evaluate.tasks: {problem}")
        if hf_loader is None:
            from datasets import load_dataset as hf_loader  # the real profile; needs the hub
        rows = [row for config in spec.hf_configs
                for row in hf_loader(spec.hf_dataset, config, split=spec.split, revision=spec.revision)]
    items = _records(name, spec, rows)
    return items[:limit] if limit else items
