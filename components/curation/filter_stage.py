"""Stage entry point: the quality, decontamination and difficulty filters, trace lengths and MSC domains."""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

from components.config import (
    DecontaminationConfig,
    DifficultyConfig,
    DomainConfig,
    EngineConfig,
    ModelConfig,
    QualityConfig,
)
from components.paths import Paths, absolute_model_ref, base_model_ref
from components.records import Example, Question, Trace, iter_jsonl, read_jsonl, write_json, write_jsonl


def _eval_texts(decontamination: DecontaminationConfig, paths: Paths) -> list[str]:
    texts = [d["question"] for d in iter_jsonl(paths.heldout)] if decontamination.include_heldout else []
    for src in decontamination.eval_sets:
        if not Path(src).exists():
            raise FileNotFoundError(f"decontamination.eval_sets: {src} not found; give JSONL paths with a 'problem' "
                                    "or 'question' field")
        texts += [d.get("problem") or d.get("question", "") for d in iter_jsonl(src)]
    return texts


def student_engine(engine: EngineConfig, dtype: str, model: str, batch_size: int):
    """A student for the difficulty filter (built inside a Ray Data actor)."""
    from components.inference.build import engine_for
    return engine_for(engine, dtype, model, batch_size=batch_size)


def filter_stage(quality: QualityConfig, decontamination: DecontaminationConfig, difficulty: DifficultyConfig,
                 domain: DomainConfig, engine: EngineConfig, model: ModelConfig, paths: Paths) -> dict:
    """Quality, decontamination and difficulty filters; trace lengths and MSC domains of what survives."""
    from transformers import AutoTokenizer

    from components.common.progress import progress_bar
    from components.common.threads import use_threads
    from components.curation.decontamination import NgramIndex
    from components.curation.difficulty import trace_length
    from components.curation.filtering import classify_domains, quality_and_decontamination, student_solves
    use_threads()
    traces = {t.question_id: t for t in read_jsonl(paths.traces, Trace)}
    examples = [Example(question=q, trace=traces[q.id]) for q in read_jsonl(paths.pool, Question) if q.id in traces]
    index = NgramIndex.build(_eval_texts(decontamination, paths), decontamination.ngram)
    counts = {"pool": len(examples)}
    survivors, dropped = quality_and_decontamination(examples, quality, index)
    reasons = Counter(ex.drop_reason for ex in dropped)
    counts["after_quality"] = len(examples) - sum(n for r, n in reasons.items() if r != "contaminated")
    counts["after_decontamination"] = len(survivors)
    if difficulty.enabled and survivors:
        for student in difficulty.students:
            ref = absolute_model_ref(base_model_ref(model, paths) if student == "base" else student)
            factory = partial(student_engine, engine, model.dtype, ref, difficulty.batch_size)
            with progress_bar(f"difficulty: {student} attempts", total=len(survivors)) as advance:
                solved = student_solves(survivors, factory, ref, difficulty, progress=advance)
            for ex in survivors:
                ex.student_correct[student] = solved[ex.question.id]
        hard = [ex for ex in survivors if not any(ex.student_correct.values())]
        reasons["solved_by_student"] += len(survivors) - len(hard)
        survivors = hard
    counts["after_difficulty"] = len(survivors)
    tokenizer = AutoTokenizer.from_pretrained(base_model_ref(model, paths))
    for ex in survivors:
        ex.trace_tokens = trace_length(tokenizer, ex)
    domain_outcome = classify_domains(survivors, domain)
    write_jsonl(paths.filtered, survivors)
    reasons["kept"] = len(survivors)
    report = {"counts": counts, "drop_reasons": dict(reasons), "domain_classifier": domain.classifier,
              **({"domain_outcome": dict(domain_outcome)} if domain_outcome else {})}
    write_json(paths.metric("filter_report.json"), report)
    return report
