"""Pool sources: every source's rows mapped onto one Question schema, checked, deduplicated.

A source is procedural (components/data/pool.py), local JSONL or Parquet (a file or a
directory of them), or a Hugging Face dataset by name. Each row must carry a
non-empty question and a reference answer; rows that do not go to the quarantine
file with the reason (the job never stops on one bad row). Exact duplicates
(after Unicode normalisation, case folding and whitespace collapsing) are
dropped by hash, the first occurrence kept.

Row filters: ``where`` / ``exclude`` keep or drop rows by a field's value (s1 took NuminaMath's
``source: aops_forum`` rows whole and a sample of the rest); ``sample`` takes a seeded uniform sample of
what is left (``limit`` the first rows). Row ids keep the row's number in the whole dataset, so two entries
of one dataset never collide. ``max_year`` keeps only rows whose ``year_field`` is at most that
year (s1 keeps AIME up to 2022 so AIME24/25 stay unseen); rows past it are
counted as ``excluded``, rows without a readable year are quarantined.

Answers: ``answer_extract: boxed`` reads the last ``\\boxed{}`` of a solution; a
solution that is a bare integer (the AIME sources) is the answer itself; any other row is quarantined.
``boxed_or_solution`` (the s1 pool, whose GPQA explanations, letter answers, science and puzzle rows carry no
``\\boxed{}``) keeps such a row with its whole solution as the reference answer, marked
``metadata.answer_format = "solution"``: s1 graded those with an LLM judge against the reference.

Published traces: a source with ``thinking_field`` (s1K-1.1's ``deepseek_thinking_trajectory``, with
``attempt_field: deepseek_attempt``) hands each row's trace and attempt to the distill stage in
``metadata.published_trace`` (components/records.py); distill takes it instead of asking the teacher.

    result = load_pool(cfg.pool); result.questions, result.quarantined, result.report
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from components.common.grading import last_boxed
from components.config import PoolConfig, PoolSource
from components.data.pool import generate_source
from components.records import PUBLISHED_TRACE, Question

_SPACE = re.compile(r"\s+")
_BARE_INTEGER = re.compile(r"^[+-]?\d+$")
EXCLUDED = "excluded by a row filter"


def normalised_hash(text: str) -> str:
    norm = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return hashlib.sha256(norm.encode()).hexdigest()


def _files(path: Path, ext: str) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob(f"**/*.{ext}"))
    if not path.exists():
        raise FileNotFoundError(f"pool.sources: {path} not found")
    return [path]


def _jsonl_rows(src: PoolSource) -> Iterator[dict | str]:
    for f in _files(Path(src.path), "jsonl"):
        with open(f) as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"not valid JSON ({e.msg}): {line[:200]}"


def _parquet_rows(src: PoolSource) -> Iterator[dict]:
    import pyarrow.parquet as pq
    for f in _files(Path(src.path), "parquet"):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
            yield from batch.to_pylist()


def _hf_rows(src: PoolSource) -> Iterator[dict]:
    if not src.revision:  # a dataset is read at a pinned commit only: the pool is the same on every run
        raise ValueError(f"pool.sources: {src.name} has no revision; set revision to the commit SHA of the "
                         "dataset to read (its history on the hub lists them)")
    from datasets import load_dataset
    yield from load_dataset(src.name, src.config, split=src.split, revision=src.revision)


ROW_READERS: dict[str, Callable[[PoolSource], Iterator]] = {
    "jsonl": _jsonl_rows, "parquet": _parquet_rows, "hf": _hf_rows,
}


def _label(src: PoolSource) -> str:
    return src.name or (Path(src.path).stem if src.path else src.kind)


def row_to_question(row: dict | str, i: int, src: PoolSource) -> Question | str:
    """The Question of one row, or the reason it cannot be one."""
    if not isinstance(row, dict):
        return row if isinstance(row, str) else f"row is {type(row).__name__}, not an object"
    question = row.get(src.question_field)
    if not isinstance(question, str) or not question.strip():
        return f"field {src.question_field!r} missing or not non-empty text"
    answer = row.get(src.answer_field)
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    answer_format = "short"
    if isinstance(answer, str) and src.answer_extract in ("boxed", "boxed_or_solution"):
        short = last_boxed(answer) or (answer.strip() if _BARE_INTEGER.match(answer.strip()) else "")
        if not short and src.answer_extract == "boxed_or_solution" and answer.strip():
            answer_format = "solution"  # the whole solution is the reference
        else:
            answer = short
    if not isinstance(answer, str) or not answer.strip():
        how = " (no \\boxed{} in it)" if src.answer_extract == "boxed" else ""
        return f"field {src.answer_field!r} missing or empty{how}"
    if src.max_year is not None:
        year = str(row.get(src.year_field, "")).strip()
        if not year.isdigit():
            return f"field {src.year_field!r} missing or not a year (max_year filter)"
        if int(year) > src.max_year:
            return EXCLUDED
    label = _label(src)
    rid = row.get(src.id_field) if src.id_field else None
    qid = f"{label}-{rid}" if rid not in (None, "") else f"{label}-{i:07d}"
    meta = {k: v for k, v in row.items() if k not in (src.question_field, src.answer_field, src.thinking_field,
                                                      src.attempt_field)
            and isinstance(v, (str, int, float, bool)) and len(str(v)) <= 200}
    if answer_format == "solution":
        meta["answer_format"] = "solution"
    if src.thinking_field and (thinking := _trace_text(row.get(src.thinking_field))):
        meta[PUBLISHED_TRACE] = {"teacher": src.trace_teacher or label, "thinking": thinking,
                                 "answer": _trace_text(row.get(src.attempt_field)) if src.attempt_field else ""}
    return Question(id=qid, source=label, question=question.strip(), answer=answer.strip(),
                    difficulty=int(level) if (level := str(row.get("difficulty", ""))).isdigit() else 0,
                    metadata=meta)


def _trace_text(value) -> str:
    """A published trace field as text: a string, or a list of strings (s1K's thinking_trajectories) joined by
    newlines, as s1 joined them for training; anything else is no trace."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)
    return value.strip() if isinstance(value, str) else ""


def _kept_by_filters(row, src: PoolSource) -> bool:
    """Whether a row passes ``where`` and ``exclude`` (a row that is not an object passes: it is quarantined)."""
    if not isinstance(row, dict):
        return True
    if any(str(row.get(f)) not in values for f, values in src.where.items()):
        return False
    return not any(str(row.get(f)) in values for f, values in src.exclude.items())


def dataset_rows(src: PoolSource) -> Iterator[tuple[int, dict | str]]:
    """(row number in the dataset, row) of the rows a source takes: filtered, then sampled or cut to ``limit``."""
    rows = ((i, r) for i, r in enumerate(ROW_READERS[src.kind](src)) if _kept_by_filters(r, src))
    if src.sample:
        return iter(reservoir_sample(rows, src.sample, src.sample_seed))
    return (x for k, x in enumerate(rows) if not src.limit or k < src.limit)


def reservoir_sample(items: Iterator, k: int, seed: int) -> list:
    """A uniform sample of ``k`` items in one pass (memory for ``k`` only), in their original order."""
    rng, chosen = random.Random(seed), []
    for n, item in enumerate(items):
        if n < k:
            chosen.append((n, item))
        elif (j := rng.randrange(n + 1)) < k:
            chosen[j] = (n, item)
    return [item for _, item in sorted(chosen, key=lambda x: x[0])]


def _report_key(src: PoolSource, taken: dict) -> str:
    key = _label(src)
    parts = [f"{w} {json.dumps(getattr(src, w), sort_keys=True)}" for w in ("where", "exclude") if getattr(src, w)]
    parts += [f"sample {src.sample} (seed {src.sample_seed})"] if src.sample else []
    key = f"{key} ({', '.join(parts)})" if parts else key
    return key if key not in taken else f"{key} #{sum(k.startswith(key) for k in taken) + 1}"


@dataclass
class PoolResult:
    questions: list[Question] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def load_pool(cfg: PoolConfig) -> PoolResult:
    """All sources, in order: schema-checked, quarantined, deduplicated."""
    out = PoolResult()
    seen_text: dict[str, str] = {}
    seen_ids: set[str] = set()
    per_source: dict[str, Counter] = {}
    for src in cfg.sources:
        label, counts = _label(src), Counter()
        if src.kind == "procedural":
            candidates: Iterator = enumerate(generate_source(cfg, src))
        else:
            candidates = ((i, row_to_question(r, i, src)) for i, r in dataset_rows(src))
        for k, (i, q) in enumerate(candidates):
            if src.kind == "procedural" and src.limit and k >= src.limit:
                break
            counts["rows"] += 1
            if q == EXCLUDED:
                counts["excluded"] += 1
                continue
            if isinstance(q, str):
                out.quarantined.append({"source": label, "row": i, "reason": q})
                counts["quarantined"] += 1
                continue
            if q.id in seen_ids:
                out.quarantined.append({"source": label, "row": i, "reason": f"duplicate id {q.id!r}"})
                counts["quarantined"] += 1
                continue
            digest = normalised_hash(q.question)
            if digest in seen_text:
                counts["duplicates"] += 1
                continue
            seen_text[digest], counts["kept"] = q.id, counts["kept"] + 1
            if PUBLISHED_TRACE in q.metadata:
                counts["published_traces"] += 1
            seen_ids.add(q.id)
            out.questions.append(q)
        per_source[_report_key(src, per_source)] = counts
    out.report = {"sources": {k: dict(v) for k, v in per_source.items()}, "questions": len(out.questions),
                  "quarantined": len(out.quarantined),
                  "duplicates": sum(c["duplicates"] for c in per_source.values())}
    return out
