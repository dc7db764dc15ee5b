"""Stage entry point of the distill package (receives only the ``teacher`` section)."""
from __future__ import annotations

from components.config import TeacherConfig
from components.distill import distillation as d
from components.paths import Paths
from components.records import Question, Trace, published_trace, read_jsonl, write_json, write_jsonl

# The keys a distill report carries (the register stage logs them as distill_<key>), for a run that asked nobody.
_NOTHING_ASKED = {"done": 0, "failed": 0, "missing": 0, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                  "cost_usd": 0.0, "spent_usd": 0.0, "failure_reasons": {}, "unasked": 0,
                  "stopped_at_cost_cap": False}


def split_published(questions: list[Question], teacher: TeacherConfig) -> tuple[dict[str, Trace], list[Question]]:
    """(question id -> the published trace it arrived with, the questions the teacher must answer)."""
    published = {}
    if teacher.use_published:
        published = {q.id: t for q in questions if (t := published_trace(q)) is not None}
    return published, [q for q in questions if q.id not in published]


def distill_stage(teacher: TeacherConfig, paths: Paths) -> dict:
    """A reasoning trace per pool question: the one it arrived with (a dataset's published trace), else the
    teacher's (resumable: finished shards are kept)."""
    questions = read_jsonl(paths.pool, Question)
    published, asked = split_published(questions, teacher)
    report, traces = dict(_NOTHING_ASKED), {}
    if asked:
        fingerprint = d.teacher_fingerprint(teacher)
        shard_dir = (f"{teacher.shard_uri.rstrip('/')}/{fingerprint}" if teacher.shard_uri
                     else paths.distill_shards(fingerprint))
        report = d.distill_pool(asked, teacher, shard_dir)
        if report["stopped_at_cost_cap"]:
            write_json(paths.metric("distill_report.json"), {**report, "published": len(published)})
            raise d.CostCapReached(d.cost_cap_message(report))  # no partial traces.jsonl for later stages to cache
        traces = {t.question_id: t for t in d.merged_traces(asked, shard_dir)}
    report.update(questions=len(questions), published=len(published), done=report["done"] + len(published))
    write_json(paths.metric("distill_report.json"), report)
    write_jsonl(paths.traces, [published.get(q.id) or traces[q.id] for q in questions])
    return report
