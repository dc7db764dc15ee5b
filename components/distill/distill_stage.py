"""Stage entry point of the distill package (receives only the ``teacher`` section)."""
from __future__ import annotations

from components.config import TeacherConfig
from components.distill import distillation as d
from components.paths import Paths
from components.records import Question, read_jsonl, write_json, write_jsonl


def distill_stage(teacher: TeacherConfig, paths: Paths) -> dict:
    """Ask the teacher for a reasoning trace per pool question (resumable: finished shards are kept)."""
    questions = read_jsonl(paths.pool, Question)
    fingerprint = d.teacher_fingerprint(teacher)
    shard_dir = f"{teacher.shard_uri.rstrip('/')}/{fingerprint}" if teacher.shard_uri else paths.distill_shards(fingerprint)
    report = d.distill_pool(questions, teacher, shard_dir)
    write_json(paths.metric("distill_report.json"), report)
    if report["stopped_at_cost_cap"]:
        raise d.CostCapReached(d.cost_cap_message(report))  # no partial traces.jsonl for later stages to cache
    write_jsonl(paths.traces, d.merged_traces(questions, shard_dir))
    return report
