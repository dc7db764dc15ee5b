"""s1's Algorithm 1 (strategy s1) and the pools the paper's ablations draw from."""
import json
from collections import Counter

import pytest

from components.config import SelectionConfig
from components.curation.select_stage import select_stage
from components.curation.selection import STRATEGIES, phase1, select
from components.paths import Paths
from components.records import Example, Question, Trace, write_json, write_jsonl
from tests.support.examples import ex as example


def ex(qid, source_type, answer, teacher_answer, tokens, msc="05", kind="math"):
    q = Question(id=qid, source="simplescaling/data_ablation_full59K", question=f"Question {qid}?", answer=answer,
                 msc=msc, metadata={"source_type": source_type, "kind": kind})
    return Example(question=q, trace=Trace(question_id=qid, teacher="gemini", thinking="t" * 50,
                                           answer=teacher_answer), trace_tokens=tokens)


def _pool():
    rows = [
        ex("aime-ok", "qq8933/AIME_1983_2024", "204", "Answer: 204", 900),            # phase 1: correct AIME
        ex("aime-wrong", "qq8933/AIME_1983_2024", "204", "Answer: 205", 9000),        # teacher wrong
        ex("gpqa-ok", "Idavidrein/gpqa", "C", "A careful check gives (C)", 500, kind="multiple_choice"),
        ex("gpqa-wrong", "Idavidrein/gpqa", "C", "Answer: A", 8000, kind="multiple_choice"),
        ex("math-long-ok", "qfq/openaimath/Precalculus", r"\frac{1}{2}", "Answer: 0.5", 6000),   # long, correct
        ex("math-long-wrong", "qfq/openaimath/Algebra", "3", "Answer: 4", 7000),
        ex("math-short-ok", "qfq/openaimath/Algebra", "3", "Answer: 3", 5000),        # correct but not long
        ex("numina-long", "AI-MO/NuminaMath-CoT/olympiads", "7", "Answer: 7", 9999),  # not MATH: no phase 1
    ]
    for i in range(60):  # phase 2 material over three domains
        rows.append(ex(f"n{i:03d}", "AI-MO/NuminaMath-CoT/aops_forum", "1", "Answer: 1", 100 + i,
                       msc=("05", "11", "97")[i % 3]))
    return rows


def test_phase1_takes_teacher_correct_aime_gpqa_and_long_math():
    got = {e.question.id for e in phase1(_pool(), SelectionConfig(phase1_min_trace_tokens=5600))}
    assert got == {"aime-ok", "gpqa-ok", "math-long-ok"}
    got = {e.question.id for e in phase1(_pool(), SelectionConfig(phase1_min_trace_tokens=4000))}
    assert got == {"aime-ok", "gpqa-ok", "math-long-ok", "math-short-ok"}  # the threshold is a param


def test_s1_is_phase1_then_diversity_over_the_rest():
    pool, cfg = _pool(), SelectionConfig(phase1_min_trace_tokens=5600)
    chosen = [e.question.id for e in select(pool, "s1", 20, seed=3, selection=cfg)]
    assert len(chosen) == len(set(chosen)) == 20
    assert set(chosen[:3]) == {"aime-ok", "gpqa-ok", "math-long-ok"}
    rest = [e for e in pool if e.question.id not in {"aime-ok", "gpqa-ok", "math-long-ok"}]
    assert chosen[3:] == [e.question.id for e in select(rest, "diversity", 17, seed=3)]
    assert chosen == [e.question.id for e in select(pool[::-1], "s1", 20, seed=3, selection=cfg)]
    # more phase-1 examples than the size: the longest of them
    assert [e.question.id for e in select(pool, "s1", 2, seed=0, selection=cfg)] == ["math-long-ok", "aime-ok"]


def _stage_dir(tmp_path):
    paths = Paths.for_profile("t", tmp_path)
    quality = _pool()
    hard = [e for e in quality if e.question.id[1:].isdigit() and int(e.question.id[1:]) % 2 == 0]
    write_jsonl(paths.quality_pool, quality)
    write_jsonl(paths.filtered, hard)
    write_json(paths.metric("filter_report.json"), {"counts": {"pool": 70, "after_difficulty": len(hard)}})
    return paths, {e.question.id for e in quality}, {e.question.id for e in hard}


def _chosen(paths):
    return {json.loads(line)["question"]["id"] for line in paths.selected.read_text().splitlines()}


def test_ablations_draw_from_the_quality_pool_and_s1_from_the_filtered_one(tmp_path):
    paths, quality, hard = _stage_dir(tmp_path)
    report = select_stage(SelectionConfig(strategy="all", size=5), paths)
    assert _chosen(paths) == quality and report["available"] == len(quality) and report["pool"] == "quality_pool.jsonl"
    select_stage(SelectionConfig(strategy="random", size=30, seed=1), paths)
    assert _chosen(paths) - hard  # random reaches examples the difficulty filter dropped
    select_stage(SelectionConfig(strategy="longest", size=2), paths)
    assert _chosen(paths) == {"numina-long", "aime-wrong"}
    select_stage(SelectionConfig(strategy="diversity_only", size=len(quality)), paths)
    assert _chosen(paths) == quality
    for strategy in ("s1", "diversity"):
        report = select_stage(SelectionConfig(strategy=strategy, size=10), paths)
        assert _chosen(paths) <= hard and report["pool"] == "filtered.jsonl"


def _domain_pool(n_per_domain=(40, 10, 5)):
    rows = []
    for msc, n in zip(("05", "11", "97"), n_per_domain):
        rows += [example(msc=msc, tokens=10 * i + 1, qid=f"{msc}-{i:03d}") for i in range(n)]
    return rows


def test_diversity_sampling_is_uniform_over_domains_and_favours_long_traces():
    chosen = select(_domain_pool((200, 200, 200)), "diversity", 150, seed=0)
    per = Counter(e.question.msc for e in chosen)
    assert all(35 <= n <= 65 for n in per.values())
    # 2^-rank: with plenty left, picks are almost always among the longest in each domain
    longest = {f"{m}-{i:03d}" for m in ("05", "11", "97") for i in range(199 - 60, 200)}
    assert sum(e.question.id in longest for e in chosen) >= 145


def test_small_domains_are_exhausted_then_others_fill():
    chosen = select(_domain_pool(), "diversity", 50, seed=1)
    per = Counter(e.question.msc for e in chosen)
    assert per["97"] == 5 and per["11"] == 10 and per["05"] == 35
    assert len({e.question.id for e in chosen}) == 50


def test_strategies_are_seeded_and_order_independent():
    pool = _domain_pool()
    for name in STRATEGIES:
        a = [e.question.id for e in select(pool, name, 20, seed=3)]
        b = [e.question.id for e in select(pool[::-1], name, 20, seed=3)]
        assert a == b, name
    assert [e.trace_tokens for e in select(pool, "longest", 3, 0)] == [391, 381, 371]
    assert len(select(pool, "all", 3, 0)) == len(pool)
    with pytest.raises(ValueError, match="selection.strategy"):
        select(pool, "best", 3, 0)


def test_phase1_matches_s1s_exact_source_types_not_look_alikes():
    """Loose patterns took NuminaMath's amc_aime for AIME and OlympiadBench's .../Math for MATH: s1's exact
    source_type values (MATH by its qfq/openaimath/ prefix) take neither."""
    rows = [ex("aime", "qq8933/AIME_1983_2024", "204", "Answer: 204", 100),
            ex("amc-aime", "AI-MO/NuminaMath-CoT/amc_aime", "204", "Answer: 204", 9000),
            ex("olympiad-math", "Hothan/OlympiadBench/Open-ended/Math", "3", "Answer: 3", 9000),
            ex("arena-math", "GAIR/OlympicArena/Math", "3", "Answer: 3", 9000),
            ex("math", "qfq/openaimath/Geometry", "3", "Answer: 3", 9000),
            ex("gpqa-extended", "Idavidrein/gpqa_extended", "C", "Answer: C", 9000, kind="multiple_choice")]
    assert {e.question.id for e in phase1(rows, SelectionConfig())} == {"aime", "math"}


def test_phase1_grades_a_reference_solution_by_the_judges_verdict():
    """A GPQA row whose reference is the explanation (answer_format solution) cannot be graded by rule: phase 1
    takes it when the LLM judge said the teacher was right, and not without a verdict."""
    def gpqa(qid, verdict):
        e = ex(qid, "Idavidrein/gpqa", "Zinc displaces hydrogen, giving H2 gas.", "Answer: (B) H2", 400)
        e.question.metadata["answer_format"] = "solution"
        if verdict is not None:
            e.question.metadata["teacher_judged_correct"] = verdict
        return e
    rows = [gpqa("yes", True), gpqa("no", False), gpqa("unjudged", None)]
    assert {e.question.id for e in phase1(rows, SelectionConfig())} == {"yes"}


def test_the_judge_records_verdicts_from_the_last_line():
    import asyncio

    import httpx

    from components.common.chat_client import ChatClient
    from components.config import DomainConfig
    from components.curation.judge import judge_teacher, parse_verdict
    assert parse_verdict("The attempt matches.\nYes") is True and parse_verdict("**No**") is False
    assert parse_verdict("Probably right") is None
    replies = iter(["It matches the reference.\nYes", "Wrong gas.\nNo", "unsure"])

    def handler(request):
        body = {"choices": [{"message": {"content": next(replies)}, "finish_reason": "stop"}]}
        return httpx.Response(200, text=json.dumps(body))
    rows = []
    for qid in ("a", "b", "c"):
        e = ex(qid, "Idavidrein/gpqa", "Zinc displaces hydrogen.", "Answer: H2", 10)
        e.question.metadata["answer_format"] = "solution"
        rows.append(e)
    rows.append(ex("short", "qq8933/AIME_1983_2024", "204", "Answer: 204", 10))  # graded by rule: not sent
    client = ChatClient(DomainConfig(classifier="llm", model="claude-sonnet-5", base_url="http://judge.test/v1",
                                     concurrency=1), transport=httpx.MockTransport(handler))
    assert asyncio.run(judge_teacher(rows, client)) == {"judged": 2, "correct": 1, "unjudged": 1}
    assert [e.question.metadata.get("teacher_judged_correct") for e in rows] == [True, False, None, None]
