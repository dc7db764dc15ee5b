"""Stage entry point: the quality, decontamination and difficulty filters, trace lengths and MSC domains.

Two outputs: ``filtered.jsonl`` (after every filter: what s1's diversity phase and
Algorithm 1 draw from) and ``quality_pool.jsonl`` (after quality and
decontamination, before difficulty: what the paper's ablations draw from). Both
carry trace lengths and MSC domains. The filter report records the benchmarks the
pool was decontaminated against (``decontaminated_against``); the evaluate stage
refuses to report any other.

Rows whose reference is a whole solution (``answer_format: solution``) are graded by
the LLM judge (the domain classifier's model, as s1 used one Claude model for
both): the teacher's answer (``teacher_judged``) and each student's attempt
(``student_judged``: judged, correct, unjudged, cut_off per student; an attempt
the judge could not rule on counts as not solved). With the deterministic
classifier there is no judge: the students' attempts on those rows are graded by
rule against the whole solution, which rarely matches, so such rows mostly stay;
``solution_references`` records the rows and how they were graded.
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable, Optional

from components.common.progress import progress_bar
from components.common.threads import use_threads
from components.config import (
    DecontaminationConfig,
    DifficultyConfig,
    DomainConfig,
    EngineConfig,
    ModelConfig,
    QualityConfig,
)
from components.curation.decontamination import NgramIndex
from components.curation.filtering import classify_domains, quality_and_decontamination, student_solves, trace_length
from components.curation.judge import judge_students, judge_teacher, needs_judge, solution_reference
from components.data.tasks import TASKS, load_task
from components.paths import Paths, absolute_model_ref, base_model_ref
from components.records import Example, Question, Trace, iter_jsonl, read_jsonl, write_json, write_jsonl


def eval_texts(decontamination: DecontaminationConfig, paths: Paths,
               task_files: Optional[dict[str, str]] = None) -> tuple[list[str], dict[str, dict]]:
    """Every evaluation question to decontaminate against, and what they are ({name: {questions, source}})."""
    texts: list[str] = []
    against: dict[str, dict] = {}
    if decontamination.include_heldout:
        held = [d["question"] for d in iter_jsonl(paths.heldout)]
        texts += held
        against["heldout"] = {"questions": len(held), "source": str(paths.heldout)}
    for name in decontamination.tasks:
        if name not in TASKS:
            raise ValueError(f"decontamination.tasks: unknown task {name!r}; choose from {sorted(TASKS)}")
        path = (task_files or {}).get(name)
        questions = load_task(name, path)  # every question, whatever evaluate.task_limit says
        texts += [q.question for q in questions]
        # GPQA's text carries the shuffled options; its question alone is indexed as well
        texts += [q.question.split("\n\n(A)")[0] for q in questions if q.metadata.get("kind") == "multiple_choice"]
        against[name] = {"questions": len(questions), "source": path or TASKS[name].hf_dataset}
    for src in decontamination.eval_sets:
        if not Path(src).exists():
            raise FileNotFoundError(f"decontamination.eval_sets: {src} not found; give JSONL paths with a 'problem' "
                                    "or 'question' field")
        rows = [d.get("problem") or d.get("question", "") for d in iter_jsonl(src)]
        texts += rows
        against[f"file:{src}"] = {"questions": len(rows), "source": src}
    return texts, against


def student_engine(engine: EngineConfig, dtype: str, model: str, batch_size: int, revision: Optional[str] = None):
    """A student for the difficulty filter (built inside a Ray Data actor), at its pinned commit."""
    from components.inference.engine import build_engine  # heavy (torch): only the actors that build a student
    return build_engine(engine, dtype, model, batch_size=batch_size, revision=revision)


def student_model(student: str, model: ModelConfig, difficulty: DifficultyConfig,
                  paths: Paths) -> tuple[str, DifficultyConfig]:
    """(where a student loads from, the difficulty section it runs with). 'base' is the base model at
    ``model.revision`` (for a hub id; a built or local directory has none): its commit is set in the section's
    ``revisions`` under its reference, whatever ``revisions`` says for that name, so both runners load the
    commit every other stage reads. Any other student keeps its ``revisions`` entry."""
    if student != "base":
        return absolute_model_ref(student), difficulty
    ref = absolute_model_ref(base_model_ref(model, paths))
    revisions = {k: v for k, v in difficulty.revisions.items() if k != ref}
    if model.source == "hub" and model.revision:
        revisions[ref] = model.revision
    return ref, difficulty.model_copy(update={"revisions": revisions})


def _with_judge(domain: DomainConfig, work: Callable[..., Awaitable[dict]]) -> dict:
    """Run ``work(client)`` with a chat client on the domain classifier's model (the judge)."""
    import asyncio

    from components.common.chat_client import ChatClient

    async def run() -> dict:
        client = ChatClient(domain.model_copy(update={"max_tokens": 1024, "workers": 1}), kind="openai")
        try:
            return await work(client)
        finally:
            await client.aclose()
    return asyncio.run(run())


def judge_reference_solutions(examples: list[Example], domain: DomainConfig) -> dict:
    """The teacher's answers to questions whose reference is a whole solution, judged by the domain
    classifier's model (s1 used one Claude model for both); nothing to do without an LLM classifier or such rows."""
    if domain.classifier != "llm" or not any(needs_judge(ex) for ex in examples):
        return {}
    return _with_judge(domain, lambda client: judge_teacher(examples, client))


# one student's answers: (question id -> solved by rule, question id -> attempt text for the judge)
StudentRun = Callable[[str, bool], tuple[dict[str, bool], dict[str, str]]]


def difficulty_filter(examples: list[Example], students: list[str], domain: DomainConfig,
                      attempt: StudentRun) -> tuple[list[Example], list[Example], dict]:
    """(kept, dropped, report) of the difficulty filter: ``attempt(student, judge)`` runs one student over the
    examples; a question any student solved is dropped (``solved_by_student``). With an LLM classifier the
    students' attempts on rows whose reference is a whole solution are judged by its model (``student_judged``);
    without one they are graded by rule. ``solution_references`` says which, when there are such rows."""
    judging = domain.classifier == "llm"
    attempts: dict[str, dict[str, str]] = {}
    for student in students:
        solved, attempts[student] = attempt(student, judging)
        for ex in examples:
            ex.student_correct[student] = solved[ex.question.id]
    report: dict = {}
    solution_rows = sum(solution_reference(ex.question) for ex in examples)
    if solution_rows:
        report["solution_references"] = {"rows": solution_rows, "graded_by": "judge" if judging else "rule"}
        if judging:
            report["student_judged"] = _with_judge(domain, lambda client: judge_students(examples, attempts, client))
    kept = [ex for ex in examples if not any(ex.student_correct.values())]
    dropped = [ex for ex in examples if any(ex.student_correct.values())]
    for ex in dropped:
        ex.drop_reason = "solved_by_student"
    return kept, dropped, report


def filter_stage(quality: QualityConfig, decontamination: DecontaminationConfig, difficulty: DifficultyConfig,
                 domain: DomainConfig, engine: EngineConfig, model: ModelConfig, paths: Paths,
                 task_files: Optional[dict[str, str]] = None) -> dict:
    """Quality, decontamination and difficulty filters; trace lengths and MSC domains of what survives."""
    from transformers import AutoTokenizer
    use_threads()
    traces = {t.question_id: t for t in read_jsonl(paths.traces, Trace)}
    examples = [Example(question=q, trace=traces[q.id]) for q in read_jsonl(paths.pool, Question) if q.id in traces]
    texts, against = eval_texts(decontamination, paths, task_files)
    index = NgramIndex.build(texts, decontamination.ngram)
    counts = {"pool": len(examples)}
    survivors, dropped = quality_and_decontamination(examples, quality, index)
    reasons = Counter(ex.drop_reason for ex in dropped)
    counts["after_quality"] = len(examples) - sum(n for r, n in reasons.items() if r != "contaminated")
    counts["after_decontamination"] = len(survivors)
    # trace lengths and domains once, on the whole quality pool (the ablations need them; the survivors of
    # the difficulty filter below are a subset and keep theirs)
    tokenizer = AutoTokenizer.from_pretrained(base_model_ref(model, paths), revision=model.revision)
    for ex in survivors:
        ex.trace_tokens = trace_length(tokenizer, ex)
    domain_outcome = classify_domains(survivors, domain)
    judged = judge_reference_solutions(survivors, domain)
    write_jsonl(paths.quality_pool, survivors)
    graded: dict = {}
    if difficulty.enabled and survivors:
        def attempt(student: str, judge: bool) -> tuple[dict[str, bool], dict[str, str]]:
            ref, cfg = student_model(student, model, difficulty, paths)
            factory = partial(student_engine, engine, model.dtype, ref, cfg.batch_size, cfg.revisions.get(ref))
            with progress_bar(f"difficulty: {student} attempts", total=len(survivors)) as advance:
                return student_solves(survivors, factory, ref, cfg, progress=advance, judge=judge)
        survivors, solved, graded = difficulty_filter(survivors, difficulty.students, domain, attempt)
        reasons["solved_by_student"] += len(solved)
    counts["after_difficulty"] = len(survivors)
    write_jsonl(paths.filtered, survivors)
    reasons["kept"] = len(survivors)
    report = {"counts": counts, "drop_reasons": dict(reasons), "domain_classifier": domain.classifier,
              "decontaminated_against": against, "ngram": decontamination.ngram,
              **({"domain_outcome": dict(domain_outcome)} if domain_outcome else {}),
              **({"teacher_judged": judged} if judged else {}), **graded}
    write_json(paths.metric("filter_report.json"), report)
    return report
