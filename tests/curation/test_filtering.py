"""The filters as Ray Data transforms give what the plain functions give; domains; selection report."""
import random
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from components.common.network import free_port
from components.config import DifficultyConfig, DomainConfig, PoolConfig, QualityConfig
from components.curation.decontamination import NgramIndex
from components.curation.filtering import classify_domains, quality_and_decontamination, student_solves, trace_length
from components.curation.quality import quality_reason
from components.curation.selection import select
from components.curation.selection_report import plot_selection_report, selection_report
from components.data.domains import classify
from components.data.pool import generate_pool
from components.distill.teachers.programmatic import ProgrammaticTeacher
from components.distill.teachers.simulator import Simulator
from components.inference.attempts import student_attempts
from components.records import Example, Trace
from tests.support import examples as rows


def _examples(n=120, seed=5, malformed=0.2):
    from components.config import TeacherConfig
    teacher = ProgrammaticTeacher(TeacherConfig())
    out = []
    for i, q in enumerate(generate_pool(PoolConfig(size=n, seed=seed, malformed_fraction=malformed))):
        t = teacher.solve(q)
        if i % 17 == 0:
            t = Trace(question_id=q.id, teacher="t", ok=False, error="HTTP 500")
        out.append(Example(question=q, trace=t))
    return out


def test_ray_transforms_match_the_plain_filters():
    examples = _examples()
    index = NgramIndex.build([examples[3].question.question, examples[8].question.question], n=8)
    kept, dropped = quality_and_decontamination(examples, QualityConfig(), index)
    expected = {}
    for ex in examples:
        expected[ex.question.id] = quality_reason(ex, QualityConfig()) or (
            "contaminated" if index.contaminated(ex.question.question) else None)
    got = {ex.question.id: ex.drop_reason for ex in kept + dropped}
    assert got == expected
    reasons = Counter(expected.values())
    assert reasons["api_error"] >= 5 and reasons["contaminated"] >= 1 and reasons[None] == len(kept)
    assert {"missing_figure", "ascii_art", "inconsistent_numbering"} <= set(reasons)


def _student(model_dir):
    from components.inference.hf_engine import HFEngine
    return HFEngine.from_pretrained(str(model_dir), batch_size=16)


@pytest.mark.parametrize("workers", [1, 2])
def test_difficulty_attempts_as_ray_batch_inference_match_in_process(tiny_model_dir, workers):
    """One actor or two side by side (a thread each): the answers of one engine in this process."""
    examples = _examples(n=24, malformed=0.0)
    cfg = DifficultyConfig(max_new_tokens=6, batch_size=8, workers=workers)
    solved, attempts = student_solves(examples, partial(_student, tiny_model_dir), str(tiny_model_dir), cfg)
    local = student_attempts(_student(tiny_model_dir), examples, cfg.max_new_tokens)
    assert solved == {ex.question.id: ok for ex, ok in zip(examples, local)} and attempts == {}


def test_student_worker_sends_text_only_for_solution_references_with_the_judge_on():
    """With the judge on, a row whose reference is a whole solution comes back unsolved with its attempt's text
    ('' when cut off before an answer); every other row is graded by rule with no text, as with the judge off."""
    from components.curation.filtering import StudentWorker
    from tests.curation.test_filter_stage import CFG, CUT, ScriptedStudent, _rows
    rows = _rows()
    batch = {"id": [e.question.id for e in rows], "example": [e.model_dump_json() for e in rows]}
    by_rule = student_attempts(ScriptedStudent(), rows, CFG.max_new_tokens)
    off = StudentWorker(ScriptedStudent, CFG.max_new_tokens)(batch)
    assert off == {"id": batch["id"], "solved": by_rule, "attempt": [""] * len(rows)}
    on = StudentWorker(ScriptedStudent, CFG.max_new_tokens, judge=True)(batch)
    assert dict(zip(on["id"], on["attempt"])) == {
        "right": "Hydrogen.\nAnswer: H2", "wrong": "Oxygen.\nAnswer: O2", "hedged": "It could be H2, maybe.",
        "cut": "", "sum4": "", "sum5": "", "sum6": ""}
    assert CUT not in on["attempt"]
    assert on["solved"] == [False] * 4 + by_rule[4:]


def test_llm_domain_classifier_through_an_openai_compatible_endpoint():
    examples = _examples(n=40, malformed=0.0)
    for ex in examples:
        ex.question.msc = ""
    with Simulator(free_port()) as sim:
        cfg = DomainConfig(classifier="llm", model="sim", base_url=sim.base_url, concurrency=8, workers=2,
                           batch_size=8)
        outcome = classify_domains(examples, cfg)
        asked = sim.stats()["calls"]
    assert outcome == {"classified": 40} and asked == 40
    assert [ex.question.msc for ex in examples] == [classify(ex.question.question) for ex in examples]
    assert {ex.question.msc for ex in examples} == {"97", "08", "11", "05"}


def _reference_diversity(examples, size, seed):
    """The first implementation (rng.choices over 2^-rank weights), kept to pin the fast one."""
    from components.curation.selection import _by_domain
    rng = random.Random(seed)
    groups = _by_domain(sorted(examples, key=lambda e: e.question.id))
    chosen = []
    while len(chosen) < size:
        domains = sorted(d for d, items in groups.items() if items)
        if not domains:
            break
        items = groups[rng.choice(domains)]
        idx = rng.choices(range(len(items)), weights=[2.0 ** -r for r in range(len(items))])[0]
        chosen.append(items.pop(idx))
    return chosen


def test_trace_length_counts_the_thinking_alone_without_special_tokens():
    def words(text, add_special_tokens=True):
        assert not add_special_tokens
        return {"input_ids": text.split()}
    assert trace_length(words, rows.ex(thinking="two plus two is four", answer="Answer: 4")) == 5


def test_fast_diversity_sampling_picks_exactly_what_the_reference_picks():
    rng = random.Random(1)
    examples = _examples(n=400, malformed=0.0)
    for ex in examples:
        ex.trace_tokens = rng.randint(10, 500)
    for seed in range(5):
        assert [e.question.id for e in select(examples, "diversity", 150, seed)] == \
               [e.question.id for e in _reference_diversity(examples, 150, seed)]


def test_selection_report_json_and_png(tmp_path):
    examples = _examples(n=200, malformed=0.0)
    for i, ex in enumerate(examples):
        ex.trace_tokens = 20 + i
    chosen = select(examples, "diversity", 60, 0)
    filter_report = {"counts": {"pool": 300, "after_quality": 250, "after_decontamination": 240,
                                "after_difficulty": 200}, "drop_reasons": {"api_error": 50}}
    report = selection_report(filter_report, chosen, len(examples), "diversity")
    assert report["funnel"] == {**filter_report["counts"], "selected": 60}
    assert sum(report["per_domain"].values()) == 60 and report["domains"] == 4
    assert "05 Combinatorics" in report["per_domain"]
    png = tmp_path / "selection_report.png"
    plot_selection_report(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


EVAL = Path(__file__).resolve().parents[1] / "fixtures/eval"


def _pool_example(qid: str, text: str) -> Example:
    from components.records import Question
    q = Question(id=qid, source="t", question=text, answer="1", msc="97")
    return Example(question=q, trace=Trace(question_id=qid, teacher="t", thinking="a long enough thinking trace",
                                           answer="Answer: 1"))


def test_ngram_decontamination_in_ray_workers_catches_paraphrases():
    """The index is built in the driver and probed in Ray Data workers (other processes): the n-gram hashes
    must agree there. Paraphrases that share 8-grams with an AIME24/AMC23 question but are not identical are
    dropped, as are exact copies; clean questions are kept."""
    from components.data.tasks import load_task
    evals = load_task("aime24", EVAL / "aime24.jsonl") + load_task("amc23", EVAL / "amc23.jsonl")
    index = NgramIndex.build([q.question for q in evals], n=8)
    aya, cities = evals[0].question, next(q.question for q in evals if q.question.startswith("Cities"))
    paraphrases = [
        "Rephrased for practice: " + " ".join(aya.split()[3:30]) + " What is her speed?",
        "Two friends: " + " ".join(cities.split()[6:24]) + " When do they meet?",
        "Every morning Aya goes for a $9$-kilometer-long walk, then asks: how long is it in miles?",
    ]
    copies = [evals[5].question, evals[40].question.upper()]
    clean = ["What is the digit sum of 123456?", "Find the number of primes below 100.",
             "A train leaves at noon at 60 km/h; how far has it gone by 3 pm?"]
    assert not any(p in {q.question for q in evals} for p in paraphrases)
    rows = [_pool_example(f"p{i}", t) for i, t in enumerate(paraphrases)]
    rows += [_pool_example(f"x{i}", t) for i, t in enumerate(copies)]
    rows += [_pool_example(f"c{i}", t) for i, t in enumerate(clean)]
    kept, dropped = quality_and_decontamination(rows, QualityConfig(), index)
    assert sorted(ex.question.id for ex in dropped) == ["p0", "p1", "p2", "x0", "x1"]
    assert {ex.drop_reason for ex in dropped} == {"contaminated"}
    assert sorted(ex.question.id for ex in kept) == ["c0", "c1", "c2"]


def test_ngram_hashes_are_the_same_in_another_process():
    import os
    import subprocess
    import sys

    from components.curation.decontamination import ngrams, normalise
    words = normalise("Every morning Aya goes for a 9-kilometer-long walk and stops at a coffee shop")
    code = ("from components.curation.decontamination import ngrams, normalise;"
            "print(sorted(ngrams(normalise('Every morning Aya goes for a 9-kilometer-long walk and stops at a "
            "coffee shop'), 8)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert other == str(sorted(ngrams(words, 8)))


PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures/providers"


def test_domain_worker_reads_claude_through_anthropics_openai_compatible_endpoint():
    """The classifier's reply in the shape Anthropic's OpenAI-compatible endpoint sends (fixture): code 11."""
    import asyncio

    import httpx

    from components.common.chat_client import ChatClient
    from components.curation.filtering import DomainWorker
    cfg = DomainConfig(classifier="llm", model="claude-sonnet-5", base_url="https://api.anthropic.com/v1/")
    worker = DomainWorker(cfg.model_dump_json())
    body = (PROVIDERS / "anthropic_classify.json").read_text()
    worker.client = ChatClient(cfg, transport=httpx.MockTransport(lambda request: httpx.Response(200, text=body)))
    ex = rows.ex(question="How many primes are below 30?")
    out = asyncio.run(worker({"id": [ex.question.id], "example": [ex.model_dump_json()]}))
    assert out == {"id": [ex.question.id], "msc": ["11"], "error": [""]}


def test_a_classifier_that_cannot_be_reached_stops_the_stage_naming_the_share_and_the_cause():
    """Every call fails (nothing listens on the port): no question may silently become 'unknown'."""
    from components.curation.filtering import DomainClassificationError
    examples = _examples(n=12, malformed=0.0)
    cfg = DomainConfig(classifier="llm", model="claude-sonnet-5", base_url=f"http://127.0.0.1:{free_port()}/v1",
                       max_retries=0, timeout_s=5, concurrency=4, workers=1, batch_size=6)
    with pytest.raises(DomainClassificationError) as err:
        classify_domains(examples, cfg)
    msg = str(err.value)
    assert "12 of 12 questions unclassified (100.0%)" in msg and "max_unclassified_share = 5.0%" in msg
    assert "connection error" in msg and "claude-sonnet-5" in msg


def test_unclassified_share_within_the_limit_passes_and_past_it_names_the_replies():
    from components.curation.filtering import DomainClassificationError, check_unclassified
    cfg = DomainConfig(classifier="llm", max_unclassified_share=0.05)
    check_unclassified(Counter(classified=95, unclassified=5), ["reply has no MSC code: 'x'"] * 5, cfg)
    with pytest.raises(DomainClassificationError, match=r"6 of 100 .*\(6\.0%\).*reply has no MSC code: 'Geometry'"):
        check_unclassified(Counter(classified=94, unclassified=6), ["reply has no MSC code: 'Geometry'"] * 6, cfg)


def test_domain_worker_closes_its_client_on_the_loop_its_batches_ran_on():
    """As Ray Data runs an async UDF: batches on one event loop in a thread of the actor, then the UDF deleted
    from the actor's main thread (graceful pool shutdown). Deleting the worker closes its client's connections
    on that loop; a worker that never ran a batch closes its client too."""
    import asyncio
    import gc
    import threading

    import httpx

    from components.common.chat_client import ChatClient
    from components.curation.filtering import DomainWorker
    cfg = DomainConfig(classifier="llm", model="claude-sonnet-5", base_url="https://api.anthropic.com/v1/")
    body = (PROVIDERS / "anthropic_classify.json").read_text()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        worker = DomainWorker(cfg.model_dump_json())
        worker.client = ChatClient(cfg, transport=httpx.MockTransport(lambda request: httpx.Response(200, text=body)))
        http = worker.client.http
        ex = rows.ex(question="How many primes are below 30?")
        batch = {"id": [ex.question.id], "example": [ex.model_dump_json()]}
        assert asyncio.run_coroutine_threadsafe(worker(batch), loop).result(30)["msc"] == ["11"]
        assert not http.is_closed
        del worker
        gc.collect()
        assert http.is_closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    idle = DomainWorker(cfg.model_dump_json())
    http = idle.client.http
    del idle
    gc.collect()
    assert http.is_closed
