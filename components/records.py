"""Record types shared by every stage, and their JSONL I/O.

Stages exchange files of these records so `dvc repro` and the Prefect flow run
the same code: ``write_jsonl(path, records)`` / ``read_jsonl(path, Question)``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from components.method_index import REFERENCE

T = TypeVar("T", bound=BaseModel)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(Record):
    id: str
    source: str
    question: str
    answer: str
    domain: str = ""
    msc: str = ""
    difficulty: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class Trace(Record):
    """A teacher's attempt at a question: thinking, answer, and how it went."""

    question_id: str
    teacher: str
    thinking: str = ""
    answer: str = ""
    ok: bool = True
    error: str = ""
    raw: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    latency_s: float = 0.0


# Question.metadata key of a trace that came with the question (a pool source's thinking_field, e.g. the
# DeepSeek-R1 traces of simplescaling/s1K-1.1): {"teacher", "thinking", "answer"}. Distill takes it instead of
# asking the teacher (teacher.use_published).
PUBLISHED_TRACE = "published_trace"


def published_trace(question: Question) -> Optional[Trace]:
    """The trace ``question`` arrived with, as the distill stage records it, or None (none, or an empty one)."""
    found = question.metadata.get(PUBLISHED_TRACE)
    if not isinstance(found, dict) or not str(found.get("thinking", "")).strip():
        return None
    return Trace(question_id=question.id, teacher=str(found.get("teacher") or question.source),
                 thinking=str(found["thinking"]), answer=str(found.get("answer", "")), attempts=0)


class Example(Record):
    """A question with its trace, as it moves through the filters and into SFT."""

    question: Question
    trace: Trace
    trace_tokens: int = 0
    student_correct: dict[str, bool] = Field(default_factory=dict)
    drop_reason: Optional[str] = None


COMPUTE_FIELDS = ("thinking_tokens", "probe_tokens", "discarded_tokens")  # what a result's compute sums


def record_compute(record: dict) -> Optional[int]:
    """A sample record's compute tokens (its :data:`COMPUTE_FIELDS`, an absent counter 0); None without a thinking
    count."""
    if record.get("thinking_tokens") is None:
        return None
    return sum(record.get(f) or 0 for f in COMPUTE_FIELDS)


class Thought(Record):
    """What budget forcing made of one prompt: the thinking and the answer, their token counts, the waits
    forced and whether the budget ended thinking."""

    thinking: str
    answer: str
    thinking_tokens: int
    answer_tokens: int
    waits_used: int
    hit_budget: bool
    probe_tokens: int = 0  # tokens spent on trial answers in side branches (answer-probing controllers)
    discarded_tokens: int = 0  # thinking of samples drawn and thrown away (rejection sampling's earlier tries)

    @property
    def compute_tokens(self) -> int:
        """The thinking compute this result cost: its thinking tokens, its probes' tokens and the thinking of
        the samples it discarded (:data:`COMPUTE_FIELDS`)."""
        return sum(getattr(self, f) for f in COMPUTE_FIELDS)


class Generation(Thought):
    """One budget-forced generation, graded, as the evaluation stage records it."""

    question_id: str
    budget: Optional[int]
    method: str = REFERENCE
    prompt: str
    predicted: str = ""
    gold: str = ""
    correct: bool = False

    @classmethod
    def from_forced(cls, thought: Thought, question: Question, budget: Optional[int], grade: tuple[str, bool],
                    method: str = REFERENCE) -> "Generation":
        """``thought`` (its :class:`Thought` fields only) for ``question`` at ``budget``, graded
        ``(predicted, correct)``."""
        predicted, correct = grade
        return cls(**{k: getattr(thought, k) for k in Thought.model_fields}, question_id=question.id, budget=budget,
                   method=method, prompt=question.question, predicted=predicted, gold=question.answer,
                   correct=correct)


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict]) -> int:
    """Write records atomically (temp file, fsync, rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    n = 0
    with os.fdopen(fd, "w") as f:
        for r in records:
            line = r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r)
            f.write(line + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None


def read_jsonl(path: str | Path, model: Type[T]) -> list[T]:
    return [model.model_validate(d) for d in iter_jsonl(path)]


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
